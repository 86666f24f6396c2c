"""What an upscale does, decided before any tensor is touched: the three steps' settings (validated), the target
shapes, which source layer every target layer comes from, and parameter counts (the ``--dry-run`` output).

Steps, in the order they are applied to every tensor:
1. width: hypercloning by ``width_factor`` m (hidden and FFN widths x m; head counts and head_dim unchanged);
2. heads: GDA head growth from r to R signal heads per group (noise heads and kv heads kept);
3. depth: LLaMA-Pro expansion from L to L' layers (an identity copy after every (L / (L' - L))-th layer).
"""

import dataclasses
from dataclasses import dataclass

import torch

from motif_titan.model import Motif2Model, Motif2ModelArgs, lambda_init_for_layer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
FORMATS = ("hf", "dcp")


def _check_positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} = {value!r}: must be an integer >= 1")


def allowed_depths(n_layers: int) -> list[int]:
    """Layer counts LLaMA-Pro expansion reaches from ``n_layers``: itself, or n + n / k for every divisor k."""
    return sorted({n_layers} | {n_layers + n_layers // k for k in range(1, n_layers + 1) if n_layers % k == 0})


@dataclass(frozen=True)
class UpscaleSpec:
    """The knobs of one upscale. ``None`` keeps the source's value (signal heads per group, layers);
    ``noise_snr_db = None`` is symmetric (noise-free) cloning."""

    width_factor: int = 1
    signal_heads_per_group: int | None = None
    num_layers: int | None = None
    noise_snr_db: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive_int("--width-factor", self.width_factor)
        if self.signal_heads_per_group is not None:
            _check_positive_int("--signal-heads-per-group", self.signal_heads_per_group)
        if self.num_layers is not None:
            _check_positive_int("--num-layers", self.num_layers)
        if self.noise_snr_db is not None and not (isinstance(self.noise_snr_db, (int, float))
                                                  and float(self.noise_snr_db) == float(self.noise_snr_db)):
            raise ValueError(f"--noise-snr-db = {self.noise_snr_db!r}: must be a number (dB), or left out for "
                             "noise-free cloning")


@dataclass(frozen=True)
class TargetLayer:
    """Target layer ``index`` is a copy of source layer ``source``; ``identity`` copies get zero output
    projections (attention wo, FFN w2), so the block adds nothing to the residual stream."""

    index: int
    source: int
    identity: bool

    @property
    def lambda_init_shift(self) -> tuple[float, float]:
        """(lambda_init of the source layer's index, lambda_init of the target index)."""
        return lambda_init_for_layer(self.source), lambda_init_for_layer(self.index)


def depth_layer_map(n_layers: int, target_layers: int) -> list[TargetLayer]:
    """LLaMA-Pro: with split = L / (L' - L), after every split-th source layer insert an identity copy of it.
    32 -> 40: split 4, identity blocks at target positions 4, 9, ..., 39."""
    if target_layers not in allowed_depths(n_layers):
        raise ValueError(
            f"--num-layers = {target_layers}: LLaMA-Pro depth expansion inserts one identity block after every "
            f"k-th of the {n_layers} source layers (k dividing {n_layers}), so the target must be {n_layers} + "
            f"{n_layers}/k layers; allowed: {allowed_depths(n_layers)}"
        )
    added = target_layers - n_layers
    if added == 0:
        return [TargetLayer(i, i, False) for i in range(n_layers)]
    split = n_layers // added
    layers: list[TargetLayer] = []
    for src in range(n_layers):
        layers.append(TargetLayer(len(layers), src, False))
        if (src + 1) % split == 0:
            layers.append(TargetLayer(len(layers), src, True))
    return layers


def count_parameters(args: Motif2ModelArgs) -> int:
    """Parameters of a model of these shapes (built on the meta device; a tied head counts once)."""
    with torch.device("meta"):
        model = Motif2Model(args)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class UpscalePlan:
    source: Motif2ModelArgs
    target: Motif2ModelArgs
    spec: UpscaleSpec
    layers: tuple[TargetLayer, ...]

    @property
    def width_factor(self) -> int:
        return self.spec.width_factor

    @property
    def head_copies(self) -> int:
        """How many copies each source signal head becomes (R / r)."""
        return self.target.gda_ratio // self.source.gda_ratio

    def describe(self, flavors: dict[str, Motif2ModelArgs] | None = None) -> str:
        """The ``--dry-run`` report: steps, shapes, parameter counts and the flavor the target matches."""
        s, t, m, c = self.source, self.target, self.width_factor, self.head_copies
        n_src, n_tgt = count_parameters(s), count_parameters(t)
        identity = [layer.index for layer in self.layers if layer.identity]
        rows = [
            ("dim", s.dim, t.dim), ("ffn_hidden_dim", s.ffn_hidden_dim, t.ffn_hidden_dim),
            ("n_layers", s.n_layers, t.n_layers), ("n_heads (q)", s.n_heads, t.n_heads),
            ("signal heads", s.n_signal_heads, t.n_signal_heads), ("noise heads", s.n_noise_heads, t.n_noise_heads),
            ("signal heads per group", s.gda_ratio, t.gda_ratio), ("n_kv_heads", s.n_kv_heads, t.n_kv_heads),
            ("head_dim", s.head_dim, t.head_dim), ("vocab_size", s.vocab_size, t.vocab_size),
            ("tied embeddings", s.enable_weight_tying, t.enable_weight_tying),
            ("wq", f"{s.n_heads * s.head_dim}x{s.dim}", f"{t.n_heads * t.head_dim}x{t.dim}"),
            ("wk / wv", f"{s.n_kv_heads * s.head_dim}x{s.dim}", f"{t.n_kv_heads * t.head_dim}x{t.dim}"),
            ("wo", f"{s.dim}x{s.n_signal_heads * 2 * s.head_dim}", f"{t.dim}x{t.n_signal_heads * 2 * t.head_dim}"),
            ("w1 / w3", f"{s.ffn_hidden_dim}x{s.dim}", f"{t.ffn_hidden_dim}x{t.dim}"),
            ("w2", f"{s.dim}x{s.ffn_hidden_dim}", f"{t.dim}x{t.ffn_hidden_dim}"),
            ("parameters", f"{n_src:,}", f"{n_tgt:,}"),
        ]
        lines = ["upscale plan", f"  {'':<24}{'source':>16}{'target':>16}"]
        lines += [f"  {name:<24}{str(a):>16}{str(b):>16}" for name, a, b in rows]
        noise = "symmetric (no noise)" if self.spec.noise_snr_db is None else \
            f"noisy, SNR {self.spec.noise_snr_db} dB, seed {self.spec.seed}"
        lines += [
            "steps (every one function-preserving in exact arithmetic; the written dtype's rounding is measured "
            "after writing)",
            f"  1. width x{m}: hypercloning, {noise}" + ("" if m > 1 else " (skipped)"),
            f"  2. heads: {s.gda_ratio} -> {t.gda_ratio} signal heads per group, each signal head copied {c}x, "
            f"{t.n_noise_heads} noise heads and {t.n_kv_heads} kv heads kept" + ("" if c > 1 else " (skipped)"),
            f"  3. depth: {s.n_layers} -> {t.n_layers} layers, identity blocks at {identity}, lambda vectors and "
            "subln re-solved for the shifted layer indices" + ("" if identity else " (skipped)"),
        ]
        if flavors is not None:
            lines.append(f"  target shapes match flavor: {matching_flavor(t, flavors) or 'none registered'}")
        return "\n".join(lines)


_SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "n_noise_heads", "head_dim", "ffn_hidden_dim",
                 "vocab_size", "enable_weight_tying")


def matching_flavor(args: Motif2ModelArgs, flavors: dict[str, Motif2ModelArgs]) -> str | None:
    """The first registered flavor with exactly these parameter shapes (RoPE theta, sequence length and eps are
    training settings of the flavor, not stored in a checkpoint)."""
    for name, flavor in flavors.items():
        if all(getattr(flavor, f) == getattr(args, f) for f in _SHAPE_FIELDS):
            return name
    return None


def plan_upscale(source: Motif2ModelArgs, spec: UpscaleSpec) -> UpscalePlan:
    """Check the spec against the source and derive the target shapes; raises before anything is read or written."""
    m = spec.width_factor
    r = source.gda_ratio
    R = r if spec.signal_heads_per_group is None else spec.signal_heads_per_group
    if R % r != 0:
        raise ValueError(
            f"--signal-heads-per-group = {R}: GDA head growth copies each of the source's {r} signal heads per "
            f"group the same number of times, so it must be a multiple of {r} (allowed: {r}, {2 * r}, {3 * r}, ...)"
        )
    target_layers = source.n_layers if spec.num_layers is None else spec.num_layers
    layers = depth_layer_map(source.n_layers, target_layers)
    target = dataclasses.replace(
        source,
        dim=source.dim * m,
        ffn_hidden_dim=source.ffn_hidden_dim * m,
        n_layers=target_layers,
        n_heads=source.n_noise_heads * (R + 1),
        # hypercloning gives embedding rows (tiled) and head columns (tiled / m) different values: untie
        enable_weight_tying=source.enable_weight_tying and m == 1,
    )
    return UpscalePlan(source=source, target=target, spec=spec, layers=tuple(layers))
