"""TorchTitan's Trainer, plus what the curriculum dataloader needs of the training loop.

* Batch-size ramp: before each step, ``gradient_accumulation_steps`` is set to the dataloader's
  ``micro_batches_per_step(step)`` (see motif_titan.data.ramps); TorchTitan's ``train_step`` then draws that many
  micro-batches and divides the summed loss by their global count of valid labels.
* Metrics: the metrics processor is given the dataloader, whose ``metrics(step)`` (per-domain weights and tokens)
  it logs with the step's metrics.

* Checkpoints: TorchTitan's checkpoint manager is replaced by ``IntegrityCheckpointManager`` (manifests written
  on save and verified on load, fallback to the newest intact step, continuable model-only last saves; see
  motif_titan.infra.checkpoint_integrity).
* Non-finite guard: after each step's last backward, a NaN / inf loss or gradient norm stops the run or skips the
  step before the optimizer sees it (``[guard]``, see motif_titan.infra.nonfinite_guard).
* Console: a progress line with the step count and the time left, a summary at the end, the log in
  ``<dump_folder>/train.log`` (``RunReport``, see motif_titan.console).

With any other dataloader the loop is TorchTitan's Trainer's. ``python -m motif_titan.train`` runs it.
"""

from torchtitan.tools.logging import logger
from torchtitan.train import Trainer

from motif_titan.console import RunReport
from motif_titan.infra.checkpoint_integrity import IntegrityCheckpointManager
from motif_titan.infra.nonfinite_guard import GuardConfig, NonfiniteGuard
from motif_titan.validate import launched_world_size, validate_job_config


class CurriculumTrainer(Trainer):
    def __init__(self, job_config):
        validate_job_config(job_config, launched_world_size(job_config))  # before TorchTitan builds anything
        self.report = RunReport(job_config, logger)
        super().__init__(job_config)
        self._micro_batches_per_step = getattr(self.dataloader, "micro_batches_per_step", None)
        if self._micro_batches_per_step is not None:
            self.dataloader.trainer_drives_batch_ramp = True
        self.metrics_processor.dataloader = self.dataloader
        self.checkpointer = IntegrityCheckpointManager.replacing(self.checkpointer, self)
        self.nonfinite_guard = NonfiniteGuard(getattr(job_config, "guard", None) or GuardConfig(), self.model_parts,
                                              self.parallel_dims, self.device)
        self.report.trainer_built(self)

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
