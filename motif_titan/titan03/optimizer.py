"""Parallel / Distributed / single-device Muon (+ MuonClip) as an optimizer container TorchTitan 0.3's trainer builds
(``Trainer.Config.optimizer = MuonOptimizers.Config(...)``), for any 0.3 model.

0.3's own ``OptimizersContainer`` picks an optimizer per regex param group from a fixed table (Adam, AdamW, its
DistMuon); this container instead builds one hybrid Muon + AdamW optimizer per model part as on 0.2.2
(``motif_titan.optim.settings.MuonContainerLogic``: the same parameter split by ``adamw_param_patterns``, the same
update, the same checkpoint layout). Its config holds the ``[optimizer]`` fields of the 0.2.2 TOML, one source of
truth: the Muon fields are ``MuonOptimizerFields``'.

MuonClip needs the tensor / context / pipeline layout, which 0.3 gives the ModelSpec's
``post_optimizer_build_fn``, not the container: motif2's spec attaches the max-logit recorder there
(``attach_max_logits``).
"""

import dataclasses
from dataclasses import field

from torch import nn
from torchtitan.components.optimizer import OptimizersContainer

from motif_titan.optim.max_logits import record_max_logits
from motif_titan.optim.settings import MUON_NAMES, MuonContainerLogic, MuonOptimizerFields, muon_kwargs, \
    validate_muon_config


def _muon_fields() -> list[tuple]:
    out = []
    for f in dataclasses.fields(MuonOptimizerFields):
        default = (field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING
                   else field(default=f.default))
        out.append((f.name, f.type, default))
    return out


class MuonOptimizers(MuonContainerLogic, OptimizersContainer):
    """0.3's optimizers container over ``MuonContainerLogic``. ``name`` picks the mode ("ParallelMuon",
    "DistributedMuon", "Muon"); ``lr`` / ``weight_decay`` are Muon's, AdamW's lr is ``lr * adamw_lr_ratio`` with
    ``beta1`` / ``beta2`` / ``eps``."""

    Config = dataclasses.make_dataclass(
        "Config",
        [("name", str, field(default="ParallelMuon")), ("lr", float, field(default=8e-4)),
         ("weight_decay", float, field(default=0.1)), ("beta1", float, field(default=0.9)),
         ("beta2", float, field(default=0.95)), ("eps", float, field(default=1e-8)), *_muon_fields()],
        bases=(OptimizersContainer.Config,), kw_only=True, slots=True,
        namespace={"__qualname__": "MuonOptimizers.Config", "__module__": __name__},
    )

    def __init__(self, config, *, model_parts: list[nn.Module]) -> None:
        validate_muon_config(config)
        if config.name not in MUON_NAMES:
            raise ValueError(f"optimizer.name = {config.name!r}: MuonOptimizers builds {sorted(MUON_NAMES)}; for "
                             "AdamW or Adam use TorchTitan 0.3's own OptimizersContainer.Config")
        if config.qk_clip_threshold > 0 and not all(hasattr(m, "attention_layers") for m in model_parts):
            raise ValueError(
                f"optimizer.qk_clip_threshold = {config.qk_clip_threshold} needs a model that describes its attention "
                "heads (an attention_layers() method, as motif2 has); allowed for this model: 0 (off)")
        self.config = config
        self.build_muon(model_parts, muon_kwargs(config), list(config.adamw_param_patterns))

    def step(self, *args, **kwargs) -> None:
        if self.config.qk_clip_threshold > 0 and self.max_logits is None:
            raise RuntimeError(
                f"optimizer.qk_clip_threshold = {self.config.qk_clip_threshold}, but MuonClip's max-logit recorder was "
                "never attached: the ModelSpec's post_optimizer_build_fn must call "
                "motif_titan.titan03.optimizer.attach_max_logits (motif2's spec does)")
        super().step(*args, **kwargs)

    def attach_max_logits(self, parallel_dims) -> None:
        """Start MuonClip: record each head's max logit on the job's layout (a no-op with qk_clip_threshold 0)."""
        if self.config.qk_clip_threshold > 0:
            self.qk_clip_threshold, self.qk_clip_alpha = self.config.qk_clip_threshold, self.config.qk_clip_alpha
            self.max_logits = record_max_logits(self.model_parts, parallel_dims)


def attach_max_logits(optimizers, model_parts: list[nn.Module], parallel_dims) -> None:
    """``post_optimizer_build_fn`` of motif2's ModelSpec: MuonClip's recorder on the built layout."""
    if isinstance(optimizers, MuonOptimizers):
        optimizers.attach_max_logits(parallel_dims)
