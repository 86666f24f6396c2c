"""A TorchTitan plugin as another project would write it: TorchTitan's own llama3 TrainSpec, with motif_titan's
Muon optimizer builder, embedded-data tokenizer and curriculum dataloader builders plugged in (without a
``[curriculum]`` the dataloader is the embedded text one), and motif_titan's metrics processor (which logs the
optimizer's and the dataloader's own metrics), registered as "llama3_motif".
Used by tests through ``--experimental.custom_import llama3_with_motif`` (tests/plugins on PYTHONPATH)."""

import dataclasses

from torchtitan.models.llama3 import get_train_spec as llama3_train_spec
from torchtitan.protocols.train_spec import register_train_spec

from motif_titan.data import build_curriculum_dataloader, build_tokenizer
from motif_titan.metrics import build_metrics_processor
from motif_titan.optim.builder import build_muon_optimizers

register_train_spec(
    "llama3_motif",
    dataclasses.replace(
        llama3_train_spec(),
        build_optimizers_fn=build_muon_optimizers,
        build_tokenizer_fn=build_tokenizer,
        build_dataloader_fn=build_curriculum_dataloader,
        build_metrics_processor_fn=build_metrics_processor,
    ),
)
