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
* No end pause: after the last step TorchTitan's rank 0 sleeps 2 s "for other ranks to complete" (both versions).
  Nothing waits on that sleep: every rank has passed the last step's collectives (and the final checkpoint's
  barrier) by then, and what follows (closing the trainer, destroying the process groups) is local. The trainer
  module's ``time`` is replaced, while ``train`` runs, by one whose ``sleep(2)`` returns at once (any other sleep
  still sleeps). A run ends 2 s sooner, which on this project's CPU CI is about a tenth of a 4-rank test launch.
"""

import sys
import time
from contextlib import contextmanager

from motif_titan.infra.nonfinite_guard import GuardConfig, NonfiniteGuard

END_PAUSE_S = 2  # TorchTitan's rank-0 sleep after the last step (torchtitan/train.py 0.2.2, trainer.py 0.3)


class _TimeWithoutEndPause:
    """The ``time`` module, except that ``sleep(END_PAUSE_S)`` returns at once."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds != END_PAUSE_S:
            time.sleep(seconds)


@contextmanager
def _without_end_pause(trainer_class):
    """While the block runs, the module that defines TorchTitan's ``Trainer.train`` sees ``_TimeWithoutEndPause``."""
    module = sys.modules[trainer_class.train.__module__]
    saved = module.time
    module.time = _TimeWithoutEndPause()
    try:
        yield
    finally:
        module.time = saved


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
        torchtitan_trainer = next(c for c in type(self).__mro__ if c.__module__.startswith("torchtitan.")
                                  and "train" in vars(c))
        with _without_end_pause(torchtitan_trainer):
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
