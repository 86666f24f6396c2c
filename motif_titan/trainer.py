"""TorchTitan's Trainer, plus what the curriculum dataloader needs of the training loop.

* Batch-size ramp: before each step, ``gradient_accumulation_steps`` is set to the dataloader's
  ``micro_batches_per_step(step)`` (see motif_titan.data.ramps); TorchTitan's ``train_step`` then draws that many
  micro-batches and divides the summed loss by their global count of valid labels.
* Metrics: the metrics processor is given the dataloader, whose ``metrics(step)`` (per-domain weights and tokens)
  it logs with the step's metrics.

With any other dataloader this is TorchTitan's Trainer unchanged. ``python -m motif_titan.train`` runs it.
"""

from torchtitan.train import Trainer


class CurriculumTrainer(Trainer):
    def __init__(self, job_config):
        super().__init__(job_config)
        self._micro_batches_per_step = getattr(self.dataloader, "micro_batches_per_step", None)
        if self._micro_batches_per_step is not None:
            self.dataloader.trainer_drives_batch_ramp = True
        self.metrics_processor.dataloader = self.dataloader

    def train_step(self, data_iterator):
        if self._micro_batches_per_step is not None:
            self.gradient_accumulation_steps = self._micro_batches_per_step(self.step)
        return super().train_step(data_iterator)
