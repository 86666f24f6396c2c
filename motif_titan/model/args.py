"""Motif-2 model arguments: shapes of one flavor, validated once, plus the TorchTitan hooks on them."""

from dataclasses import dataclass
from types import SimpleNamespace

from torch import nn
from torchtitan.config import JobConfig
from torchtitan.protocols.model import BaseModelArgs

# TorchTitan's FP8 linear converter and motif_titan's size-filtered variant (motif_titan.infra.float8)
SUPPORTED_CONVERTERS = ("quantize.linear.float8", "quantize.linear.float8_auto_filter")
ATTN_TYPES = ("sdpa", "flex")
POLYNORM_BACKENDS = ("auto", "triton", "torch")
GDA_VALUE_PATHS = ("auto", "split", "joint", "joint_noise")
ATTN_MASK_TYPES = ("causal", "block_causal")
FLEX_BLOCK_SIZE = 128  # flex attention's default BlockMask block (positions)


@dataclass
class Motif2ModelFields:
    """The field motif_titan adds to TorchTitan's ``[model]`` section (motif2 models only)."""

    gda_value_path: str | None = None
    """How GDA's attention applies its 2 * head_dim-wide values: "auto", "split" (two head_dim-wide calls), "joint"
    (one call), "joint_noise" (joint for the noise attention only); unset: the flavor's own (every flavor's is
    "auto"). See Motif2ModelArgs.gda_value_path."""


def validate_model_fields(model_config) -> None:
    """The ``[model]`` field motif_titan adds: ``gda_value_path`` unset or one of GDA_VALUE_PATHS (the flavor-
    dependent rule, flex takes only 'auto' / 'split', is checked by Motif2ModelArgs.apply_gda_value_path)."""
    value_path = getattr(model_config, "gda_value_path", None)
    if value_path is not None and value_path not in GDA_VALUE_PATHS:
        raise ValueError(f"model.gda_value_path = {value_path!r}; allowed: {list(GDA_VALUE_PATHS)}, or unset "
                         f"(the flavor's own)")


@dataclass
class Motif2ModelArgs(BaseModelArgs):
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
    # (GQA); "auto" = joint_noise with SDPA (the fastest GPU kernel time on an H100, see benchmarks/RESULTS.md
    # "GDA attention"), split with flex attention (whose compiled backward cannot take the 2 * head_dim-wide value
    # on an H100) and under context parallelism (ring attention is verified with split values only).
    gda_value_path: str = "auto"

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
        if self.attn_type == "flex" and self.gda_value_path not in ("auto", "split"):
            fail("gda_value_path", f"{self.gda_value_path!r} needs attn_type='sdpa'; flex attention takes 'auto' "
                 "or 'split' (its compiled backward with a 2 * head_dim-wide value does not fit an H100's shared "
                 "memory)")
        if self.head_dim % 2:
            fail("head_dim", f"must be even for RoPE, got {self.head_dim}")

    @property
    def n_signal_heads(self) -> int:
        return self.n_heads - self.n_noise_heads

    @property
    def gda_ratio(self) -> int:
        """Signal heads per group (1 = the Differential Transformer)."""
        return self.n_signal_heads // self.n_noise_heads

    def allowed_tp_degrees(self) -> list[int]:
        """Tensor parallel degrees that keep whole GDA groups per rank (they divide the number of groups) and
        split the FFN hidden dim and the vocabulary evenly."""
        return [d for d in range(1, self.n_noise_heads + 1)
                if self.n_noise_heads % d == 0 and self.ffn_hidden_dim % d == 0 and self.vocab_size % d == 0]

    def check_tp_degree(self, degree: int) -> None:
        allowed = self.allowed_tp_degrees()
        if degree not in allowed:
            raise ValueError(
                f"parallelism.tensor_parallel_degree = {degree}: tensor parallelism keeps whole GDA groups on "
                f"each rank, so the degree must divide n_noise_heads = {self.n_noise_heads} (the number of "
                f"groups), ffn_hidden_dim = {self.ffn_hidden_dim} and vocab_size = {self.vocab_size}; "
                f"allowed: {allowed}"
            )

    def check_context_parallel(self, degree: int, job_config: JobConfig) -> None:
        """Raise, naming the TOML field, when context parallelism cannot run this job: the sequence must split
        into 2 * degree chunks (TorchTitan's head-tail load balancer; degree chunks without one), of whole
        128-position blocks for flex attention, and each rank's share must split over the tensor parallel
        degree."""
        par = job_config.parallelism
        if self.gda_value_path not in ("auto", "split"):
            raise NotImplementedError(
                f"model.gda_value_path = {self.gda_value_path!r} with parallelism.context_parallel_degree = "
                f"{degree}: ring attention with a 2 * head_dim-wide value is not verified; allowed under context "
                f"parallelism: ['auto', 'split'] (auto splits)"
            )
        seq_len, tp = job_config.training.seq_len, par.tensor_parallel_degree
        chunks = 2 * degree if par.context_parallel_load_balancer else degree
        # flex attention shards its block mask in whole 128-position blocks
        multiple = chunks * (FLEX_BLOCK_SIZE if self.attn_type == "flex" else 1)
        if seq_len % multiple or (seq_len // degree) % tp:
            raise ValueError(
                f"training.seq_len = {seq_len} must be a multiple of {multiple} (parallelism.context_parallel_degree "
                f"= {degree}, load balancer {par.context_parallel_load_balancer!r}, attn_type {self.attn_type!r}) "
                f"with seq_len / {degree} a multiple of parallelism.tensor_parallel_degree = {tp}"
            )

    def apply_gda_value_path(self, value_path: str | None) -> None:
        """Take ``[model] gda_value_path``, checked against the flavor (None: keep the flavor's). Like TorchTitan's
        own update_from_config, this sets the field on the flavor's args object."""
        validate_model_fields(SimpleNamespace(gda_value_path=value_path))
        if value_path is None:
            return
        if self.attn_type == "flex" and value_path not in ("auto", "split"):
            raise ValueError(
                f"model.gda_value_path = {value_path!r} with a flex attention flavor (attn_type = 'flex'); "
                f"allowed with flex: ['auto', 'split'] (flex's compiled backward with a 2 * head_dim-wide value "
                f"does not fit an H100's shared memory)"
            )
        self.gda_value_path = value_path

    def update_from_config(self, job_config: JobConfig, **kwargs) -> None:
        """Check the job against this flavor before anything is built; raise naming the TOML field."""
        seq_len = job_config.training.seq_len
        if seq_len > self.max_seq_len:
            raise ValueError(
                f"training.seq_len = {seq_len} exceeds the max_seq_len {self.max_seq_len} of motif2 flavor "
                f"'{job_config.model.flavor}'; use training.seq_len <= {self.max_seq_len}"
            )
        self.apply_gda_value_path(getattr(job_config.model, "gda_value_path", None))
        par = job_config.parallelism
        if par.tensor_parallel_degree != 1:
            self.check_tp_degree(par.tensor_parallel_degree)
            if seq_len % par.tensor_parallel_degree:
                raise ValueError(
                    f"training.seq_len = {seq_len} must be a multiple of parallelism.tensor_parallel_degree = "
                    f"{par.tensor_parallel_degree} (the sequence-parallel norms split the sequence evenly)"
                )
        if par.context_parallel_degree != 1:
            self.check_context_parallel(par.context_parallel_degree, job_config)
        if par.pipeline_parallel_degree != 1 and self.enable_weight_tying:
            raise NotImplementedError(
                f"parallelism.pipeline_parallel_degree = {par.pipeline_parallel_degree} with flavor "
                f"'{job_config.model.flavor}', whose embedding and output head are one tied matrix: pipeline "
                f"stages would split it between the first and last stage. Use pipeline_parallel_degree = 1 or an "
                f"untied flavor (enable_weight_tying=False)."
            )
        if par.expert_parallel_degree != 1:
            raise NotImplementedError(
                f"parallelism.expert_parallel_degree = {par.expert_parallel_degree}: motif2 has no experts; "
                f"allowed: 1"
            )
        converters = list(job_config.model.converters)
        unsupported = [c for c in converters if c not in SUPPORTED_CONVERTERS]
        if unsupported:
            raise NotImplementedError(
                f"model.converters = {converters}: motif2 does not support {unsupported}; allowed: any of "
                f"{list(SUPPORTED_CONVERTERS)} (FP8 linears), or []"
            )
        if converters and self.enable_weight_tying:
            filters = list(job_config.quantize.linear.float8.filter_fqns)
            if not any(f in "output" for f in filters if f):
                raise ValueError(
                    f"quantize.linear.float8.filter_fqns = {filters}: motif2 flavor '{job_config.model.flavor}' ties "
                    f"the output head to the embedding, which must stay in BF16; add 'output'"
                )

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
