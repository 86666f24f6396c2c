"""Motif-2 model arguments: shapes of one flavor, validated once, plus the TorchTitan hooks on them.

What a job's parallelism and converters may ask of a flavor is checked in ``motif_titan.infra.job_rules``.
"""

from dataclasses import dataclass, field

from torch import nn

ATTN_TYPES = ("sdpa", "flex")
POLYNORM_BACKENDS = ("auto", "triton", "torch")
GDA_VALUE_PATHS = ("auto", "split", "joint", "joint_noise")
ATTN_MASK_TYPES = ("causal", "block_causal")


@dataclass
class Motif2ModelFields:
    """The field motif_titan adds to TorchTitan's ``[model]`` section (motif2 models only)."""

    gda_value_path: str | None = None
    """How GDA's attention applies its 2 * head_dim-wide values: "auto", "split" (two head_dim-wide calls), "joint"
    (one call), "joint_noise" (joint for the noise attention only); unset: the flavor's own (every flavor's is
    "auto"). See Motif2ModelArgs.gda_value_path."""


def validate_model_fields(model_config) -> None:
    """The ``[model]`` field motif_titan adds: ``gda_value_path`` unset or one of GDA_VALUE_PATHS (whether the
    value runs with the flavor's attention and the job's context parallelism is decided by
    ``Motif2ModelArgs.update_from_config``, through ``value_paths_that_run``)."""
    value_path = getattr(model_config, "gda_value_path", None)
    if value_path is not None and value_path not in GDA_VALUE_PATHS:
        raise ValueError(f"model.gda_value_path = {value_path!r}; allowed: {list(GDA_VALUE_PATHS)}, or unset "
                         f"(the flavor's own)")


def value_paths_that_run(attn_type: str, context_parallel: bool) -> tuple[str, ...]:
    """The ``gda_value_path`` values an attention can take: every one with SDPA on whole sequences; "auto" and
    "split" with flex attention (its compiled backward with a 2 * head_dim-wide value does not fit an H100's shared
    memory) and under context parallelism (ring attention is verified with head_dim-wide values only)."""
    return GDA_VALUE_PATHS if attn_type == "sdpa" and not context_parallel else ("auto", "split")


def resolve_gda_value_path(value_path: str, attn_type: str, context_parallel: bool) -> str:
    """The value path the attention runs: "auto" is "joint_noise" where that runs (the fastest GPU kernel time on an
    H100, see benchmarks/RESULTS.md "GDA attention"), else "split"; any other value is itself."""
    if value_path != "auto":
        return value_path
    return "joint_noise" if "joint_noise" in value_paths_that_run(attn_type, context_parallel) else "split"


@dataclass
class Motif2ModelArgs:
    """Shapes of a Motif-2 model with Grouped Differential Attention (GDA) and a PolyNorm FFN.

    The ``n_heads`` query heads form ``n_noise_heads`` groups of ``ratio`` signal heads plus one noise head,
    ``ratio = (n_heads - n_noise_heads) / n_noise_heads``. Every group owns two kv heads (K1/V1, K2/V2), so
    ``n_kv_heads == 2 * n_noise_heads``. Each signal head produces ``2 * head_dim`` channels.
    """

    dim: int = 4096
    n_layers: int = 40
    n_heads: int = 40
    n_kv_heads: int = 16
    n_noise_heads: int = 8
    head_dim: int = 128
    ffn_hidden_dim: int = 16384
    vocab_size: int = 219520
    norm_eps: float = 1e-6
    subln_eps: float = 1e-5
    polynorm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_seq_len: int = 32768
    enable_weight_tying: bool = False
    # True: wo/w2/w3 init std 0.02 / sqrt(2 * (layer_id + 1)); False: 0.02 / sqrt(2 * n_layers).
    depth_init: bool = True
    attn_type: str = "sdpa"
    attn_mask_type: str = "causal"
    # PolyNorm x up-projection: "auto" = the fused Triton kernel on CUDA, PyTorch elsewhere; "torch" forces the
    # PyTorch ops (what torch.compile fuses on its own), "triton" the kernel
    polynorm_backend: str = "auto"
    # How each GDA attention applies its 2 * head_dim-wide value: "split" = two head_dim-wide calls, one per value
    # half (Q K^T and the softmax computed twice); "joint" = one call with the whole value (computed once);
    # "joint_noise" = joint for the noise attention only (one q head per kv head), split for the signal attention
    # (GQA); "auto" = joint_noise where it runs, else split (``resolve_gda_value_path``).
    gda_value_path: str = "auto"
    # What the attention runs: gda_value_path with "auto" resolved, for whole sequences when the args are built,
    # for the job's context parallelism by update_from_config.
    resolved_gda_value_path: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def fail(field: str, msg: str) -> None:
            raise ValueError(f"Motif2ModelArgs.{field}: {msg}")

        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "n_noise_heads", "head_dim",
                     "ffn_hidden_dim", "vocab_size", "max_seq_len"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_heads <= self.n_noise_heads:
            fail("n_heads", f"({self.n_heads}) must exceed n_noise_heads ({self.n_noise_heads}): every group "
                 "needs at least one signal head")
        if (self.n_heads - self.n_noise_heads) % self.n_noise_heads != 0:
            fail("n_heads", f"heads do not divide into groups: n_heads - n_noise_heads = "
                 f"{self.n_heads - self.n_noise_heads} signal heads is not a multiple of n_noise_heads = "
                 f"{self.n_noise_heads}")
        if self.n_kv_heads != 2 * self.n_noise_heads:
            fail("n_kv_heads", f"must be 2 * n_noise_heads = {2 * self.n_noise_heads} (one K1/V1 and one "
                 f"K2/V2 head per group), got {self.n_kv_heads}")
        if self.attn_type not in ATTN_TYPES:
            fail("attn_type", f"must be one of {ATTN_TYPES}, got {self.attn_type!r}")
        if self.attn_mask_type not in ATTN_MASK_TYPES:
            fail("attn_mask_type", f"must be one of {ATTN_MASK_TYPES}, got {self.attn_mask_type!r}")
        if self.attn_type == "sdpa" and self.attn_mask_type != "causal":
            fail("attn_mask_type", f"{self.attn_mask_type!r} document masks need attn_type='flex'")
        if self.polynorm_backend not in POLYNORM_BACKENDS:
            fail("polynorm_backend", f"must be one of {POLYNORM_BACKENDS}, got {self.polynorm_backend!r}")
        if self.gda_value_path not in GDA_VALUE_PATHS:
            fail("gda_value_path", f"must be one of {GDA_VALUE_PATHS}, got {self.gda_value_path!r}")
        if self.gda_value_path not in value_paths_that_run(self.attn_type, context_parallel=False):
            fail("gda_value_path", f"{self.gda_value_path!r} needs attn_type='sdpa'; flex attention takes 'auto' "
                 "or 'split' (its compiled backward with a 2 * head_dim-wide value does not fit an H100's shared "
                 "memory)")
        if self.head_dim % 2:
            fail("head_dim", f"must be even for RoPE, got {self.head_dim}")
        self.resolved_gda_value_path = resolve_gda_value_path(self.gda_value_path, self.attn_type, False)

    @property
    def n_signal_heads(self) -> int:
        return self.n_heads - self.n_noise_heads

    @property
    def gda_ratio(self) -> int:
        """Signal heads per group (1 = the Differential Transformer)."""
        return self.n_signal_heads // self.n_noise_heads

    def update_from_config(self, job_config, **kwargs) -> None:
        """Take what the model needs of the job, whose sections ``motif_titan.validate.validate_job_config`` has
        validated: the sequence length against the flavor's, and the GDA value path (``[model] gda_value_path``,
        unset: the flavor's) checked against the flavor's attention and the job's context parallelism, then
        resolved. Like TorchTitan's own update_from_config, this sets fields on the flavor's args object. Raises
        naming the TOML field. The job's parallelism and converters are checked against the flavor in
        ``motif_titan.infra.job_rules``."""
        self.take_run(seq_len=job_config.training.seq_len, flavor=job_config.model.flavor,
                      value_path=getattr(job_config.model, "gda_value_path", None),
                      context_parallel_degree=job_config.parallelism.context_parallel_degree)

    def take_run(self, *, seq_len: int, flavor: str, value_path: str | None, context_parallel_degree: int) -> None:
        """``update_from_config`` on values rather than a TorchTitan config object (every TorchTitan version's
        integration calls this with its own config's values)."""
        if seq_len > self.max_seq_len:
            raise ValueError(
                f"training.seq_len = {seq_len} exceeds the max_seq_len {self.max_seq_len} of motif2 flavor "
                f"'{flavor}'; use training.seq_len <= {self.max_seq_len}"
            )
        if value_path is not None:
            runs = list(value_paths_that_run(self.attn_type, context_parallel=False))
            if value_path not in runs:
                why = (" (flex's compiled backward with a 2 * head_dim-wide value does not fit an H100's shared "
                       "memory)" if self.attn_type == "flex" else "")
                raise ValueError(
                    f"model.gda_value_path = {value_path!r} with a {self.attn_type} attention flavor (attn_type = "
                    f"{self.attn_type!r}); allowed with {self.attn_type}: {runs}{why}"
                )
            self.gda_value_path = value_path
        cp = context_parallel_degree
        if self.gda_value_path not in value_paths_that_run(self.attn_type, context_parallel=cp != 1):
            raise NotImplementedError(
                f"model.gda_value_path = {self.gda_value_path!r} with parallelism.context_parallel_degree = "
                f"{cp}: ring attention with a 2 * head_dim-wide value is not verified; allowed under context "
                f"parallelism: ['auto', 'split'] (auto splits)"
            )
        self.resolved_gda_value_path = resolve_gda_value_path(self.gda_value_path, self.attn_type, cp != 1)

    def get_nparams_and_flops(self, model: nn.Module, seq_len: int) -> tuple[int, int]:
        """Parameter count and training FLOPs per token (forward + backward = 3x forward).

        Matmul FLOPs: 6 per weight of every linear that multiplies activations (the output head included,
        also when tied to the embedding). Attention, per layer and token, forward: every one of the
        ``n_heads`` query heads computes scores against ``seq_len`` keys (2 * head_dim FLOPs each) and mixes a
        ``2 * head_dim``-wide value (2 * 2 * head_dim FLOPs each): signal heads use their group's V1||V2, and
        each noise map (one per group, shared by its signal heads) is applied to the same V1||V2 once.
        Causal sparsity is not discounted, as in TorchTitan's convention.
        """
        nparams = sum(p.numel() for p in model.parameters())
        nparams_embedding = model.tok_embeddings.weight.numel()
        matmul_params = nparams - nparams_embedding
        if self.enable_weight_tying:
            matmul_params += self.vocab_size * self.dim
        attn_fwd_per_token = self.n_layers * self.n_heads * (2 * self.head_dim + 2 * 2 * self.head_dim) * seq_len
        return nparams, 6 * matmul_params + 3 * attn_fwd_per_token
