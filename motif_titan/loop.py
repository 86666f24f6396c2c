"""What motif_titan's components need of TorchTitan's training loop, for the Trainer of either TorchTitan version
(mixed in ahead of it: ``motif_titan.trainer.CurriculumTrainer`` on 0.2.2, ``motif_titan.titan03.trainer.MotifTrainer``
on 0.3):

* Batch-size ramp: before each step, ``gradient_accumulation_steps`` is the dataloader's
  ``micro_batches_per_step(step)`` (see motif_titan.data.ramps); TorchTitan's ``train_step`` then draws that many
  micro-batches and divides the summed loss by their global count of valid labels.
* Metrics: the metrics processor is handed the dataloader, whose ``metrics(step)`` it logs with the step's.
* Console: progress lines, the log file and the summary (``self.report``, a ``motif_titan.console.RunReport`` the
  subclass creates before TorchTitan's ``__init__``).
* Non-finite guard: after each step's last backward, a NaN / inf loss or gradient norm stops the run or skips the
  step before the optimizer sees it (``self.nonfinite_guard``, see motif_titan.infra.nonfinite_guard).
"""

from motif_titan.infra.nonfinite_guard import GuardConfig, NonfiniteGuard


class ComponentLoop:
    report = None  # motif_titan.console.RunReport

    def wire_components(self, guard: GuardConfig | None) -> None:
        """After TorchTitan's ``__init__``: the dataloader's batch ramp and metrics, the guard (``[guard]``)."""
        self._micro_batches_per_step = getattr(self.dataloader, "micro_batches_per_step", None)
        if self._micro_batches_per_step is not None:
            self.dataloader.trainer_drives_batch_ramp = True
        self.metrics_processor.dataloader = self.dataloader
        self.nonfinite_guard = NonfiniteGuard(guard or GuardConfig(), self.model_parts, self.parallel_dims, self.device)

    def train(self):
        self.report.train_started()
        super().train()
        self.report.summary(self)

    def train_step(self, data_iterator):
        if self._micro_batches_per_step is not None:
            self.gradient_accumulation_steps = self._micro_batches_per_step(self.step)
        self.nonfinite_guard.begin_step(self.step, self.gradient_accumulation_steps)
        result = super().train_step(data_iterator)
        self.report.after_step(self.step, self.metrics_processor.should_log(self.step))
        return result

    def forward_backward_step(self, **kwargs):
        loss = super().forward_backward_step(**kwargs)
        self.nonfinite_guard.after_micro_batch(loss)
        return loss
