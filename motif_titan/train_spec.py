"""The TrainSpec ``motif2`` for TorchTitan 0.2.2, registered on import (``import motif_titan`` imports this
module under 0.2.2; TOML: ``[experimental] custom_import = "motif_titan"``). This module is the table of contents:
each builder below lives in the module named for it and can be reused on its own by other TorchTitan projects.
"""

from torchtitan.components.loss import build_cross_entropy_loss
from torchtitan.components.lr_scheduler import build_lr_schedulers
from torchtitan.components.validate import build_validator
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.protocols.train_spec import TrainSpec, register_train_spec
from torchtitan.protocols import train_spec as _train_spec_registry

from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
from motif_titan.data.text_dataloader import build_tokenizer
from motif_titan.infra import float8 as _float8  # noqa: F401  registers quantize.linear.float8_auto_filter
from motif_titan.infra.parallelize import parallelize_motif2
from motif_titan.metrics import build_metrics_processor
from motif_titan.model import Motif2Model, Motif2StateDictAdapter, motif2_args
from motif_titan.optim.builder import build_muon_optimizers

__all__ = ["TRAIN_SPEC_NAME", "get_train_spec", "motif2_args"]

TRAIN_SPEC_NAME = "motif2"


def get_train_spec() -> TrainSpec:
    """The motif2 TrainSpec: Motif-2 model and flavors, its parallelize_fn, TorchTitan's pipelining_fn, the HF
    adapter, the embedded-data tokenizer, the curriculum dataloader (``[curriculum]``; without it the text
    dataloader of ``training.dataset``), Muon (Parallel / Distributed / single) or TorchTitan's AdamW, and
    TorchTitan's own LR scheduler, loss and validator."""
    return TrainSpec(
        model_cls=Motif2Model,
        model_args=motif2_args,
        parallelize_fn=parallelize_motif2,
        # TorchTitan's own pipeline split fits the model as it is: tok_embeddings, a ``layers`` ModuleDict keyed by
        # layer index, norm, output; forward and init_weights skip the parts a stage lacks. What the split cannot
        # take (a tied embedding and head, module names the flavor lacks) is refused first (infra/job_rules.py).
        pipelining_fn=pipeline_llm,
        build_optimizers_fn=build_muon_optimizers,
        build_lr_schedulers_fn=build_lr_schedulers,
        build_dataloader_fn=build_curriculum_dataloader,
        build_tokenizer_fn=build_tokenizer,
        build_loss_fn=build_cross_entropy_loss,
        build_validator_fn=build_validator,
        build_metrics_processor_fn=build_metrics_processor,
        state_dict_adapter=Motif2StateDictAdapter,
    )


# Registering twice raises in TorchTitan; a reloaded module must not.
if TRAIN_SPEC_NAME not in _train_spec_registry._extra_train_specs:
    register_train_spec(TRAIN_SPEC_NAME, get_train_spec())
