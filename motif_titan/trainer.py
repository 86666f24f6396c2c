"""TorchTitan's Trainer, plus what the curriculum dataloader needs of the training loop.

* Batch-size ramp, dataloader metrics, the non-finite guard (``[guard]``) and the console's progress and summary:
  ``motif_titan.loop.ComponentLoop`` (shared with the TorchTitan 0.3 trainer).
* Checkpoints: TorchTitan's checkpoint manager is replaced by ``IntegrityCheckpointManager`` (manifests written
  on save and verified on load, fallback to the newest intact step, continuable model-only last saves; see
  motif_titan.infra.checkpoint_integrity).
* Console: the log in ``<dump_folder>/train.log``, ``job_config.json`` and ``model_args.json`` (``RunReport``, see
  motif_titan.console).

With any other dataloader the loop is TorchTitan's Trainer's. ``python -m motif_titan.train`` runs it.
"""

from torchtitan.tools.logging import logger
from torchtitan.train import Trainer

from motif_titan.console import RunReport
from motif_titan.infra.checkpoint_integrity import IntegrityCheckpointManager
from motif_titan.loop import ComponentLoop
from motif_titan.validate import launched_world_size, validate_job_config


class CurriculumTrainer(ComponentLoop, Trainer):
    def __init__(self, job_config):
        validate_job_config(job_config, launched_world_size(job_config))  # before TorchTitan builds anything
        self.report = RunReport(job_config, logger)
        super().__init__(job_config)
        self.wire_components(getattr(job_config, "guard", None))
        self.checkpointer = IntegrityCheckpointManager.replacing(self.checkpointer, self)
        self.report.trainer_built(self)
