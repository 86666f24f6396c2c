"""TorchTitan 0.2.2's ``build_optimizers_fn`` for Muon: any TorchTitan model, any of FSDP / HSDP / TP layouts.
The settings (``[optimizer]`` fields, their checks, the parameter split) and the container logic are version-free,
in ``motif_titan.optim.settings``; TorchTitan 0.3's container is ``motif_titan.titan03.optimizer``.
"""

from torch import nn
from torchtitan.components.optimizer import OptimizersContainer, build_optimizers
from torchtitan.distributed import ParallelDims

from .max_logits import record_max_logits
from .settings import (
    DEFAULT_ADAMW_PATTERNS,
    MUON_NAMES,
    TORCHTITAN_NAMES,
    MuonContainerLogic,
    MuonOptimizerFields,
    check_optimizer_fields,
    muon_kwargs,
    split_muon_params,
    validate_muon_config,
)

__all__ = ["DEFAULT_ADAMW_PATTERNS", "MUON_NAMES", "TORCHTITAN_NAMES", "MuonOptimizerFields",
           "MuonOptimizersContainer", "build_muon_optimizers", "check_optimizer_fields", "split_muon_params",
           "validate_muon_config"]


class MuonOptimizersContainer(MuonContainerLogic, OptimizersContainer):
    """TorchTitan 0.2.2's optimizers container over ``MuonContainerLogic`` (see there)."""

    def __init__(self, model_parts: list[nn.Module], muon_kwargs: dict, adamw_patterns: list[str],
                 qk_clip_threshold: float = 0.0, qk_clip_alpha: float = 0.5, max_logits=None) -> None:
        self.build_muon(model_parts, muon_kwargs, adamw_patterns, qk_clip_threshold, qk_clip_alpha, max_logits)


def build_muon_optimizers(
    model_parts: list[nn.Module], optimizer_config, parallel_dims: ParallelDims, ft_manager=None
) -> OptimizersContainer:
    """``build_optimizers_fn`` for a TrainSpec: Muon variants by ``optimizer.name``, TorchTitan's own otherwise."""
    validate_muon_config(optimizer_config)
    if optimizer_config.name in TORCHTITAN_NAMES:
        return build_optimizers(model_parts, optimizer_config, parallel_dims, ft_manager)
    if ft_manager is not None and getattr(ft_manager, "enabled", False):
        raise NotImplementedError("TorchFT is not supported with Muon")
    threshold = optimizer_config.qk_clip_threshold
    return MuonOptimizersContainer(model_parts, muon_kwargs(optimizer_config),
                                   list(optimizer_config.adamw_param_patterns), threshold,
                                   optimizer_config.qk_clip_alpha,
                                   record_max_logits(model_parts, parallel_dims) if threshold > 0 else None)
