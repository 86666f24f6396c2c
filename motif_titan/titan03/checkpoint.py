"""TorchTitan 0.3's DCP checkpointer with motif_titan's checkpoint integrity (``IntegrityCheckpointing``: manifests
written on save and verified on load, fallback to the newest intact step, continuable model-only last saves, step
folders that describe their model, complete HF last saves), as 0.2.2's ``IntegrityCheckpointManager`` has it.

0.3's trainer builds its checkpointer from ``Trainer.Config.checkpoint``: ``IntegrityCheckpointManager.Config`` (the
fields of 0.3's ``CheckpointManager.Config``) builds this one. ``MotifTrainer`` uses it for any model: a config that
sets 0.3's plain ``CheckpointManager.Config`` gets the same fields in this one (``integrity_config``).
"""

import dataclasses
from dataclasses import dataclass

import torch
from torchtitan.components.checkpoint import CheckpointManager

from motif_titan.infra.checkpoint_integrity import IntegrityCheckpointing


class IntegrityCheckpointManager(IntegrityCheckpointing, CheckpointManager):
    """0.3's ``CheckpointManager`` with ``IntegrityCheckpointing``; its loads run through ``_integrity_load``."""

    @dataclass(kw_only=True, slots=True)
    class Config(CheckpointManager.Config):
        """0.3's ``CheckpointManager.Config``, building ``IntegrityCheckpointManager``."""

    @torch.no_grad()
    def _load(self, step: int = -1) -> bool:
        return self._integrity_load(step, super()._load)


def integrity_config(config: CheckpointManager.Config) -> IntegrityCheckpointManager.Config:
    """``config`` itself if it builds an integrity checkpointer already; 0.3's plain DCP config with its fields
    copied into ``IntegrityCheckpointManager.Config``; any other checkpointer's config is refused by name."""
    if isinstance(config, IntegrityCheckpointManager.Config):
        return config
    if type(config) is CheckpointManager.Config:
        return IntegrityCheckpointManager.Config(
            **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    raise ValueError(
        f"checkpoint = {type(config).__qualname__}: motif_titan's trainer checks every checkpoint it saves and loads "
        "(manifests) on TorchTitan's DCP checkpointer; allowed: CheckpointManager.Config or "
        "motif_titan.titan03.checkpoint.IntegrityCheckpointManager.Config")
