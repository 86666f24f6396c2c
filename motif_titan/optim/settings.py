"""Muon's settings for TorchTitan (version-free): the ``[optimizer]`` fields, their validation, the parameter split,
and the hybrid Muon + AdamW container logic that each TorchTitan version's optimizer container shares.

TOML (0.2.2: ``[job] custom_config_module = "motif_titan.job_config"`` adds the fields below to ``[optimizer]``;
0.3: the same section read into ``motif_titan.titan03.optimizer.MuonOptimizers.Config``):

    [optimizer]
    name = "ParallelMuon"          # "ParallelMuon" | "DistributedMuon" | "Muon" | TorchTitan's "AdamW" / "Adam"
    lr = 4e-4                      # Muon lr; AdamW groups use lr * adamw_lr_ratio
    weight_decay = 0.1
    momentum = 0.95
    nesterov = true
    ns_steps = 5
    ns_coefficients = "keller"     # "keller" | "motif" | "polar_express"
    adjust_lr = "match_rms_adamw"  # "match_rms_adamw" | "original"
    chunk_size = 32
    pipeline = true
    assignment = "flops_round_robin"   # "flops_round_robin" | "lpt" | "round_robin"
    adamw_param_patterns = ["tok_embeddings", "output", "norm", "subln", "lambda_", "poly_norm"]
    qk_clip_threshold = 100.0      # MuonClip (0 = off; needs a model with attention_layers(), e.g. motif2)
    qk_clip_alpha = 0.5

beta1 / beta2 / eps of TorchTitan's section are the AdamW group's. Muon takes the 2-D parameters whose names match
none of ``adamw_param_patterns`` (substrings); everything else (and every parameter that is not 2-D) goes to AdamW.
"""

from contextlib import ExitStack
from dataclasses import dataclass, field

from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.optim import Optimizer

from motif_titan.config_checks import expect, expect_bool, expect_str, expect_str_list, is_int, is_number, refuse

from .assignment import check_assignment
from .max_logits import MaxLogitRecorder
from .muon import Muon, check_chunk_size
from .muon_clip import qk_clip
from .newton_schulz import check_ns_coefficients
from .update_rule import check_adjust_lr

MUON_NAMES = {"Muon": "single", "DistributedMuon": "distributed", "ParallelMuon": "parallel"}
TORCHTITAN_NAMES = ("AdamW", "Adam")
DEFAULT_ADAMW_PATTERNS = ["tok_embeddings", "output", "norm", "subln", "lambda_", "poly_norm"]


@dataclass
class MuonOptimizerFields:
    """The fields motif_titan adds to TorchTitan's ``[optimizer]`` section."""

    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    ns_coefficients: str = "keller"
    adjust_lr: str = "match_rms_adamw"
    adamw_lr_ratio: float = 1.0
    chunk_size: int = 32
    pipeline: bool = True
    assignment: str = "flops_round_robin"
    adamw_param_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_ADAMW_PATTERNS))
    qk_clip_threshold: float = 0.0
    """MuonClip threshold on the max pre-softmax logit per head; 0 = off."""
    qk_clip_alpha: float = 0.5


def check_optimizer_fields(optimizer) -> None:
    """TorchTitan's own ``[optimizer]`` fields."""
    expect_str("optimizer.name", optimizer.name)
    expect("optimizer.lr", optimizer.lr, is_number, ">= 0", lambda v: v >= 0)
    expect("optimizer.weight_decay", optimizer.weight_decay, is_number, ">= 0", lambda v: v >= 0)
    expect("optimizer.eps", optimizer.eps, is_number, ">= 0", lambda v: v >= 0)
    for beta in ("beta1", "beta2"):
        expect(f"optimizer.{beta}", getattr(optimizer, beta), is_number, f"0 <= {beta} < 1",
               lambda v: 0 <= v < 1)
    expect_bool("optimizer.early_step_in_backward", getattr(optimizer, "early_step_in_backward", False))


def validate_muon_config(config) -> None:
    """The ``[optimizer]`` fields motif_titan adds (and ``name``, which picks the builder): types and ranges, raised
    naming ``optimizer.<field>`` and its allowed values before any optimizer is built. Called by
    ``motif_titan.validate.validate_job_config`` before TorchTitan builds anything, and again by the builder (for
    other trainers), with TorchTitan's own fields of the section (``check_optimizer_fields``). The settings
    ``Muon`` itself takes are checked by the functions its constructor calls too (``check_assignment``,
    ``check_adjust_lr``, ``check_ns_coefficients``, ``check_chunk_size``)."""
    check_optimizer_fields(config)
    if config.name not in MUON_NAMES and config.name not in TORCHTITAN_NAMES:
        refuse("optimizer.name", config.name, sorted(MUON_NAMES) + list(TORCHTITAN_NAMES))
    expect("optimizer.momentum", config.momentum, is_number, "0 <= momentum < 1", lambda v: 0.0 <= v < 1.0)
    expect_bool("optimizer.nesterov", config.nesterov)
    expect("optimizer.ns_steps", config.ns_steps, is_int, ">= 1", lambda v: v >= 1)
    check_ns_coefficients(config.ns_coefficients)
    check_adjust_lr(config.adjust_lr)
    expect("optimizer.adamw_lr_ratio", config.adamw_lr_ratio, is_number, "> 0", lambda v: v > 0)
    check_chunk_size(config.chunk_size)
    expect_bool("optimizer.pipeline", config.pipeline)
    check_assignment(config.assignment)
    expect_str_list("optimizer.adamw_param_patterns", config.adamw_param_patterns)
    expect("optimizer.qk_clip_threshold", config.qk_clip_threshold, is_number, "0 (off) or > 0", lambda v: v >= 0)
    expect("optimizer.qk_clip_alpha", config.qk_clip_alpha, is_number, "0 <= qk_clip_alpha <= 1",
           lambda v: 0.0 <= v <= 1.0)
    if config.name not in MUON_NAMES and config.qk_clip_threshold != 0:
        raise ValueError(
            f"optimizer.qk_clip_threshold = {config.qk_clip_threshold!r} with optimizer.name = {config.name!r}: "
            f"MuonClip runs inside motif_titan's Muon optimizers and {config.name} would ignore it; allowed: set "
            f"optimizer.name to one of {sorted(MUON_NAMES)}, or optimizer.qk_clip_threshold = 0 (off)")
    if config.name in MUON_NAMES and getattr(config, "early_step_in_backward", False):
        raise NotImplementedError("optimizer.early_step_in_backward = true is not supported with Muon; allowed: false")


def split_muon_params(model: nn.Module, adamw_patterns: list[str]) -> tuple[dict, list]:
    """({FQN: Muon param}, [AdamW params]) of one model part by this project's (or any TorchTitan model's) FQNs."""
    muon, adamw = {}, []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 2 and not any(pattern in name for pattern in adamw_patterns):
            muon[name] = param
        else:
            adamw.append(param)
    return muon, adamw


def muon_kwargs(config) -> dict:
    """The ``Muon`` constructor's settings from an optimizer section (or 0.3 config) with the fields above."""
    return dict(
        lr=config.lr,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.nesterov,
        ns_steps=config.ns_steps,
        ns_coefficients=config.ns_coefficients,
        adjust_lr=config.adjust_lr,
        adamw_betas=(config.beta1, config.beta2),
        adamw_eps=config.eps,
        adamw_lr_ratio=config.adamw_lr_ratio,
        mode=MUON_NAMES[config.name],
        assignment=config.assignment,
        chunk_size=config.chunk_size,
        pipeline=config.pipeline,
    )


class MuonContainerLogic:
    """One hybrid Muon + AdamW optimizer per model part; the checkpoint holds each part's state flattened by FQN
    (DCP's ``get_optimizer_state_dict``, the same layout under both TorchTitan versions), and the LR schedulers wrap
    each optimizer. With ``qk_clip_threshold`` > 0, MuonClip runs after every step on the maxima ``max_logits``
    recorded (the model parts' attention layers), and ``metrics()`` reports it. Mixed into a TorchTitan
    ``OptimizersContainer`` subclass of each version, ahead of it."""

    def build_muon(self, model_parts: list[nn.Module], muon_kwargs: dict, adamw_patterns: list[str],
                   qk_clip_threshold: float = 0.0, qk_clip_alpha: float = 0.5,
                   max_logits: MaxLogitRecorder | None = None) -> None:
        self.qk_clip_threshold, self.qk_clip_alpha = qk_clip_threshold, qk_clip_alpha
        self.max_logits = max_logits if qk_clip_threshold > 0 else None
        self._metrics: dict[str, float] = {}
        if qk_clip_threshold > 0 and max_logits is None:
            raise ValueError(
                f"optimizer.qk_clip_threshold = {qk_clip_threshold} needs a model that describes its attention "
                "heads (an attention_layers() method, as motif2 has); allowed for this model: 0 (off)"
            )
        self.model_parts = model_parts
        self.optimizers = []
        all_params = []
        for model in model_parts:
            muon_params, adamw_params = split_muon_params(model, adamw_patterns)
            self.optimizers.append(Muon(list(muon_params.values()), adamw_params, param_names=list(muon_params),
                                        **muon_kwargs))
            all_params.extend(list(muon_params.values()) + adamw_params)
        assert len(self.optimizers) == len(model_parts)
        Optimizer.__init__(self, all_params, {"lr": muon_kwargs["lr"], "weight_decay": muon_kwargs["weight_decay"]})

    def step(self, *args, **kwargs) -> None:
        for optimizer in self.optimizers:
            optimizer.step(*args, **kwargs)
        if self.max_logits is not None:
            stats = qk_clip(self.max_logits.heads, self.qk_clip_threshold, self.qk_clip_alpha)
            self._metrics = {"qk_clip/max_logit": stats["max_logit"], "qk_clip/heads_clipped": stats["heads_clipped"]}

    def zero_grad(self, *args, **kwargs) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(*args, **kwargs)

    def state_dict(self) -> dict:
        options = StateDictOptions(flatten_optimizer_state_dict=True)
        return {k: v for model, optimizer in zip(self.model_parts, self.optimizers)
                for k, v in get_optimizer_state_dict(model, optimizer, options=options).items()}

    def load_state_dict(self, state_dict: dict) -> None:
        options = StateDictOptions(flatten_optimizer_state_dict=True)
        with ExitStack() as stack:
            for optimizer in self.optimizers:
                stack.enter_context(optimizer.filled_groups_only())
            for model, optimizer in zip(self.model_parts, self.optimizers):
                set_optimizer_state_dict(model, optimizer, optim_state_dict=state_dict, options=options)

    def metrics(self) -> dict[str, float]:
        """Metrics of the last step (MuonClip's max logit and clipped-head count), for the metrics processor."""
        return dict(self._metrics)
