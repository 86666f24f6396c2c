"""The Motif-2 transformer: Grouped Differential Attention, PolyNorm gated FFN, pre-norm RMSNorm blocks.

Layout follows TorchTitan's llama3 (``tok_embeddings``, ``layers``, ``norm``, ``output``; ``attention.wq/wk/wv/wo``,
``feed_forward.w1/w2/w3``, ``attention_norm``, ``ffn_norm``) so TorchTitan's helpers find their way around.
RoPE uses the HF rotate-half layout, so HF checkpoints load without permuting wq/wk.
"""

import functools
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, Partial
from torch.nn.attention.flex_attention import BlockMask

from motif_titan.kernels import poly_norm_mul, upcast

from .args import Motif2ModelArgs
from .attention import CausalSDPA, FlexAttention, block_mask


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> None:
    """A truncated normal init drawn in float32 whatever the tensor's dtype (torch's sampler is unstable in low
    precision), then cast into the tensor; in place."""
    values = tensor.float()
    nn.init.trunc_normal_(values, mean=mean, std=std, a=a, b=b)
    if values is not tensor:
        tensor.copy_(values)


def lambda_init_for_layer(layer_idx: int) -> float:
    """Motif's lambda_init with a 0-based layer index: 0.8 - 0.6 * exp(-0.3 * (layer_idx - 1))."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer_idx - 1))


# fp32 exp overflows past 88.7228. When an exponent of lambda passes the dtype's value just below log(dtype max)
# (88.72283 in fp32, 709.78271 in fp64), both exponents are shifted down by the excess: lambda stays finite,
# keeps its sign and the ratio of its two terms (all the RMSNorm after it sees), and every value the spec formula
# computes finitely is computed exactly as the formula does (the shift is then 0)
@functools.cache
def lambda_exponent_max(dtype: torch.dtype) -> float:
    at_log_max = torch.tensor(math.log(torch.finfo(dtype).max), dtype=dtype)
    return float(torch.nextafter(at_log_max, torch.tensor(-math.inf, dtype=dtype)))


# past |lambda| = 2^16 the signal - lambda * noise difference is formed in units of a power of two (exact
# scaling), so it cannot overflow, and its RMSNorm (scale-invariant up to eps) stays finite
_LAMBDA_SCALE_FREE_LOG2 = 16.0


def gda_lambda(q1, k1, q2, k2, lambda_init: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda, number of exponents past the limit) of one GDA layer from its four lambda vectors (plain
    tensors): exp(q1 . k1) - exp(q2 . k2) + lambda_init in (at least) fp32, both exponents shifted down by
    whatever the larger one exceeds ``lambda_exponent_max`` by (a constant for autograd)."""
    dot1, dot2 = torch.sum(upcast(q1) * upcast(k1)), torch.sum(upcast(q2) * upcast(k2))
    top = lambda_exponent_max(dot1.dtype)
    shift = (torch.maximum(dot1, dot2).detach() - top).clamp_min(0.0)
    past_limit = (dot1 > top).int() + (dot2 > top).int()
    # (the clamp only catches the rounding of dot - shift)
    lam1, lam2 = torch.exp((dot1 - shift).clamp(max=top)), torch.exp((dot2 - shift).clamp(max=top))
    return lam1 - lam2 + lambda_init, past_limit


def _inverse_lambda_scale(lam: torch.Tensor) -> torch.Tensor:
    """1.0 for |lambda| <= 2^16 (every multiplication by it is exact), else 2^-k with |lambda| * 2^-k <= 2^16."""
    exponent = torch.ceil(torch.log2(lam.detach().abs().clamp_min(1.0))) - _LAMBDA_SCALE_FREE_LOG2
    return torch.exp2(-exponent.clamp_min(0.0))


def precompute_rope_cache(
    head_dim: int, max_seq_len: int, theta: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """cos || sin of every position, shape (max_seq_len, 2 * head_dim), HF rotate-half layout.
    Computed in float64 and returned in ``dtype``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


def local_replicated(param: torch.Tensor) -> torch.Tensor:
    """``param`` as a plain tensor. Tensor parallelism keeps the small per-layer parameters (lambda vectors, subln,
    PolyNorm) as DTensors replicated over the tp mesh, while each rank applies them to its own groups or FFN
    channels only: the local copy's gradient is that rank's partial sum (Partial), summed where DTensor or FSDP
    turns it back into a Replicate gradient. Plain tensors pass through."""
    if not isinstance(param, DTensor):
        return param
    return param.to_local(grad_placements=[Partial() if p.is_replicate() else p for p in param.placements])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, rope_cache: torch.Tensor, positions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (bs, seq, heads, d) and k (bs, seq, kv_heads, d); ``positions`` (1 or bs, seq) restarts them."""
    seqlen, head_dim = xq.shape[1], xq.shape[-1]
    cache = rope_cache[:seqlen] if positions is None else rope_cache[positions]
    cache = cache.view(-1, seqlen, 1, 2 * head_dim)  # broadcast over batch (if shared) and heads
    cos, sin = cache[..., :head_dim], cache[..., head_dim:]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        return (xf * cos + _rotate_half(xf) * sin).type_as(x)

    return rotate(xq), rotate(xk)


class QKProbe(nn.Module):
    """A hook point that does nothing: attention calls it with its post-RoPE queries (bs, seq, q heads, d), keys
    (bs, seq, kv heads, d) and ``positions`` (None, or (1 or bs, seq)), heads in the order of ``wq`` / ``wk`` rows
    (the ones this rank computes). Forward hooks registered on it observe them (MuonClip's max-logit recording)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None) -> None:
        return None


class GroupedDiffAttention(nn.Module):
    """Grouped Differential Attention (Motif-2).

    Query heads come in ``G = n_noise_heads`` groups of ``R`` signal heads followed by one noise head; kv heads
    come in pairs (2g = K1/V1, 2g+1 = K2/V2 of group g). Signal head s = R*g + j outputs

        [softmax(q_s K1_g^T / sqrt(d)) - lambda * softmax(q_noise_g K2_g^T / sqrt(d))] @ (V1_g || V2_g)

    where the group's noise map is computed once and shared. Each signal head's 2d channels go through an fp32
    RMSNorm (``subln``) and are scaled by (1 - lambda_init) before ``wo``. One lambda per layer:
    exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init.
    """

    def __init__(self, model_args: Motif2ModelArgs, layer_id: int):
        super().__init__()
        self.head_dim = model_args.head_dim
        self.n_groups = model_args.n_noise_heads
        self.ratio = model_args.gda_ratio
        self.attn_type = model_args.attn_type
        self.value_path = model_args.resolved_gda_value_path  # "split", "joint" or "joint_noise"
        self.lambda_init = lambda_init_for_layer(layer_id)
        dim, d = model_args.dim, model_args.head_dim

        self.wq = nn.Linear(dim, model_args.n_heads * d, bias=False)
        self.wk = nn.Linear(dim, model_args.n_kv_heads * d, bias=False)
        self.wv = nn.Linear(dim, model_args.n_kv_heads * d, bias=False)
        self.wo = nn.Linear(model_args.n_signal_heads * 2 * d, dim, bias=False)
        self.lambda_q1 = nn.Parameter(torch.empty(d, dtype=torch.float32))
        self.lambda_k1 = nn.Parameter(torch.empty(d, dtype=torch.float32))
        self.lambda_q2 = nn.Parameter(torch.empty(d, dtype=torch.float32))
        self.lambda_k2 = nn.Parameter(torch.empty(d, dtype=torch.float32))
        self.subln = nn.RMSNorm(2 * d, eps=model_args.subln_eps)
        # Every attention call goes through this module (context parallelism wraps it).
        self.inner_attention = FlexAttention() if self.attn_type == "flex" else CausalSDPA()
        # Sees the post-RoPE q and k of every forward (MuonClip's max-logit recorder hooks it).
        self.qk_probe = QKProbe()

    def init_weights(self, init_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            trunc_normal_(linear.weight, mean=0.0, std=0.02)
        trunc_normal_(self.wo.weight, mean=0.0, std=init_std)
        for vec in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(vec, mean=0.0, std=0.1)
        self.subln.reset_parameters()

    @property
    def kv_head_for_q_head(self) -> tuple[int, ...]:
        """The kv head each q head reads its logits from (the head layout, over all heads): signal heads of group g
        use K1 = kv head 2g, the noise head uses K2 = kv head 2g + 1."""
        R = self.ratio
        return tuple(2 * g + (j == R) for g in range(self.n_groups) for j in range(R + 1))

    def joint_value(self, attention: str) -> bool:
        """Whether the signal or the noise attention takes the 2d-wide value in one call (``gda_value_path``, with
        "auto" resolved when the args took the job: ``Motif2ModelArgs.resolved_gda_value_path``)."""
        return self.value_path == "joint" or (self.value_path == "joint_noise" and attention == "noise")

    def lambda_full(self) -> torch.Tensor:
        """This layer's lambda as an fp32 scalar tensor (differentiable in the four lambda vectors; see
        ``gda_lambda`` for the shift that keeps it finite)."""
        vectors = (local_replicated(v) for v in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return gda_lambda(*vectors, self.lambda_init)[0]

    @torch.no_grad()
    def lambda_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda, exponents past the limit) from the whole lambda vectors, outside forward: sharded (FSDP) vectors are
        gathered over their shard group, so every rank of the group must call it."""
        vectors = (v.full_tensor() if isinstance(v, DTensor) else v
                   for v in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return gda_lambda(*vectors, self.lambda_init)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: BlockMask | None) -> torch.Tensor:
        """Causal softmax(q k^T / sqrt(d)) v for (bs, heads, seq, d) tensors; kv heads shared GQA-style."""
        enable_gqa = q.shape[1] != k.shape[1]
        if self.attn_type == "flex":
            assert isinstance(masks, BlockMask), masks
            return self.inner_attention(q, k, v, block_mask=masks, enable_gqa=enable_gqa)
        assert masks is None, "sdpa attention takes no attention masks"
        return self.inner_attention(q, k, v, enable_gqa=enable_gqa)

    def _attend_wide_v(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: BlockMask | None, joint: bool
    ) -> torch.Tensor:
        """Attention with a 2d-wide value: one call (``joint``) or two d-wide calls, one per value half."""
        if joint:
            return self._attend(q, k, v, masks)
        v1, v2 = v.chunk(2, dim=-1)
        return torch.cat([self._attend(q, k, v1.contiguous(), masks), self._attend(q, k, v2.contiguous(), masks)], dim=-1)

    def project_heads(
        self, x: torch.Tensor, rope_cache: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """GDA's attention inputs from x (bs, seq, dim), RoPE applied (at ``positions`` when given; ``qk_probe``
        sees them): q_signal (bs, G*R, seq, d) with signal index R*g + j, q_noise, k1, k2 (bs, G, seq, d) and
        v = V1_g || V2_g (bs, G, seq, 2d). G counts this rank's groups under tensor parallelism."""
        bs, seqlen, _ = x.shape
        d, R = self.head_dim, self.ratio
        xq = self.wq(x).view(bs, seqlen, -1, d)
        xk = self.wk(x).view(bs, seqlen, -1, d)
        xv = self.wv(x).view(bs, seqlen, -1, d)
        xq, xk = apply_rotary_emb(xq, xk, rope_cache, positions)
        self.qk_probe(xq, xk, positions)
        # -1 instead of G: the number of local groups once tensor parallelism shards whole groups.
        xq = xq.view(bs, seqlen, -1, R + 1, d)
        xk = xk.view(bs, seqlen, -1, 2, d)
        q_signal = xq[:, :, :, :R].flatten(2, 3).transpose(1, 2)  # (bs, G*R, seq, d), signal index R*g + j
        q_noise = xq[:, :, :, R].transpose(1, 2)  # (bs, G, seq, d)
        k1 = xk[:, :, :, 0].transpose(1, 2)  # (bs, G, seq, d)
        k2 = xk[:, :, :, 1].transpose(1, 2)
        v = xv.view(bs, seqlen, -1, 2 * d).transpose(1, 2)  # (bs, G, seq, 2d) = V1_g || V2_g
        return q_signal, q_noise, k1, k2, v

    def combine_heads(self, signal: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The layer's output from the signal attention (bs, G*R, seq, 2d) and the noise attention (bs, G, seq, 2d):
        signal - lambda * noise per signal head, subln (fp32), times (1 - lambda_init), cast to ``dtype``, ``wo``."""
        bs, _, seqlen, _ = signal.shape
        d, R = self.head_dim, self.ratio
        n_local_groups = noise.shape[1]
        signal = signal.view(bs, n_local_groups, R, seqlen, 2 * d)
        lam = self.lambda_full()
        inverse_scale = _inverse_lambda_scale(lam)  # 1.0 in the normal range
        out = upcast(signal) * inverse_scale - (lam * inverse_scale) * upcast(noise).unsqueeze(2)
        out = out.flatten(1, 2).transpose(1, 2)  # (bs, seq, G*R, 2d)
        out = F.rms_norm(out, (2 * d,), upcast(local_replicated(self.subln.weight)).to(out.dtype), self.subln.eps)
        out = (out * (1.0 - self.lambda_init)).to(dtype)
        return self.wo(out.reshape(bs, seqlen, -1))

    def forward(
        self,
        x: torch.Tensor,
        rope_cache: torch.Tensor,
        attention_masks: BlockMask | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q_signal, q_noise, k1, k2, v = self.project_heads(x, rope_cache, positions)
        signal = self._attend_wide_v(q_signal.contiguous(), k1.contiguous(), v, attention_masks,
                                     joint=self.joint_value("signal"))
        noise = self._attend_wide_v(q_noise.contiguous(), k2.contiguous(), v, attention_masks,
                                    joint=self.joint_value("noise"))
        return self.combine_heads(signal, noise, x.dtype)


class PolyNorm(nn.Module):
    """PolyNorm activation: w0 * norm(x^3) + w1 * norm(x^2) + w2 * norm(x) + b over the last dim, times the
    FFN's up projection (tensor parallelism swaps in a version that all-reduces the row moments)."""

    def __init__(self, eps: float = 1e-6, backend: str = "auto"):
        super().__init__()
        self.eps, self.backend = eps, backend
        self.weight = nn.Parameter(torch.empty(3, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(1, dtype=torch.float32))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, 1.0 / 3.0)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, mul: torch.Tensor) -> torch.Tensor:
        """PolyNorm(x) * mul (the gated FFN's activation), fused."""
        return poly_norm_mul(x, mul, self.weight, self.bias, self.eps, backend=self.backend)


class PolyNormFeedForward(nn.Module):
    """w2(PolyNorm(w1 x) * w3 x); PolyNorm and the product in fp32, one downcast at the end.
    The activation is ``motif_titan.kernels.poly_norm_mul``: the fused Triton kernel on CUDA, PyTorch elsewhere."""

    def __init__(self, dim: int, hidden_dim: int, eps: float, polynorm_backend: str = "auto"):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.poly_norm = PolyNorm(eps, polynorm_backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.poly_norm(self.w1(x), self.w3(x)))

    def init_weights(self, init_std: float) -> None:
        trunc_normal_(self.w1.weight, mean=0.0, std=0.02)
        for linear in (self.w2, self.w3):
            trunc_normal_(linear.weight, mean=0.0, std=init_std)
        self.poly_norm.reset_parameters()


class TransformerBlock(nn.Module):
    """Pre-norm block: h = x + attn(norm1(x)); out = h + ffn(norm2(h)). No residual scaling."""

    def __init__(self, layer_id: int, model_args: Motif2ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = GroupedDiffAttention(model_args, layer_id)
        self.feed_forward = PolyNormFeedForward(model_args.dim, model_args.ffn_hidden_dim, model_args.polynorm_eps,
                                                model_args.polynorm_backend)
        self.attention_norm = nn.RMSNorm(model_args.dim, eps=model_args.norm_eps)
        self.ffn_norm = nn.RMSNorm(model_args.dim, eps=model_args.norm_eps)
        depth = layer_id + 1 if model_args.depth_init else model_args.n_layers
        self.weight_init_std = 0.02 / (2 * depth) ** 0.5

    def forward(
        self,
        x: torch.Tensor,
        rope_cache: torch.Tensor,
        attention_masks: BlockMask | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope_cache, attention_masks, positions)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self) -> None:
        self.attention_norm.reset_parameters()
        self.ffn_norm.reset_parameters()
        self.attention.init_weights(self.weight_init_std)
        self.feed_forward.init_weights(self.weight_init_std)


class Motif2Model(nn.Module):
    """Motif-2 decoder: embeddings, ``n_layers`` GDA + PolyNorm blocks, final RMSNorm, output head."""

    def __init__(self, model_args: Motif2ModelArgs):
        super().__init__()
        self.model_args = model_args
        self.vocab_size = model_args.vocab_size
        self.n_layers = model_args.n_layers
        self.tok_embeddings = nn.Embedding(model_args.vocab_size, model_args.dim)
        self.register_buffer("rope_cache", self._precompute_rope_cache(), persistent=False)
        self.layers = nn.ModuleDict(
            {str(layer_id): TransformerBlock(layer_id, model_args) for layer_id in range(model_args.n_layers)}
        )
        self.norm = nn.RMSNorm(model_args.dim, eps=model_args.norm_eps)
        self.output = nn.Linear(model_args.dim, model_args.vocab_size, bias=False)
        if model_args.enable_weight_tying:
            self.output.weight = self.tok_embeddings.weight

    def _precompute_rope_cache(self) -> torch.Tensor:
        args = self.model_args
        return precompute_rope_cache(args.head_dim, args.max_seq_len, args.rope_theta)

    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        """Motif's TorchTitan init. With tied embeddings the shared matrix gets the output head's init
        (trunc normal, std dim^-0.5): normal(0, 1) would give logits of size sqrt(dim)."""
        buffer_device = buffer_device or self.rope_cache.device
        with torch.device(buffer_device):
            self.rope_cache = self._precompute_rope_cache()
        if self.tok_embeddings is not None:
            nn.init.normal_(self.tok_embeddings.weight)
        for layer in self.layers.values():
            if layer is not None:
                cast(TransformerBlock, layer).init_weights()
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.model_args.enable_weight_tying:
            # to_empty() or parallelization may have replaced one side of the tie: tie again.
            self.output.weight = self.tok_embeddings.weight
        if self.output is not None:
            std = self.model_args.dim**-0.5
            trunc_normal_(self.output.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def gda_lambdas(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{layer index: (lambda, exponents past the limit)} of the layers this model part holds, from the parameters
        (a collective over each sharded vector's group: every rank of the group must call it)."""
        return {int(layer_id): cast(TransformerBlock, layer).attention.lambda_stats()
                for layer_id, layer in self.layers.items() if layer is not None}

    def attention_layers(self) -> dict[int, GroupedDiffAttention]:
        """{layer index among ``n_layers``: its attention} for the layers this model part holds. What MuonClip uses
        of each: ``wq`` / ``wk``, ``head_dim``, ``kv_head_for_q_head`` (the head layout) and ``qk_probe``."""
        return {int(layer_id): cast(TransformerBlock, layer).attention
                for layer_id, layer in self.layers.items() if layer is not None}

    def get_attention_masks(
        self,
        input_batch: torch.Tensor,
        tokenizer,
        extra_inputs: dict[str, torch.Tensor] | None = None,
    ) -> BlockMask:
        if self.model_args.attn_type != "flex":
            raise TypeError(f"attention masks are built for attn_type 'flex', not {self.model_args.attn_type!r}")
        if self.model_args.attn_mask_type == "causal":
            return block_mask(input_batch, eos_id=None)
        if tokenizer.eos_id is None:
            raise ValueError("attn_mask_type 'block_causal' needs a tokenizer with an eos token")
        return block_mask(input_batch, eos_id=tokenizer.eos_id)

    def forward(
        self,
        tokens: torch.Tensor,
        attention_masks: BlockMask | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            h = layer(h, self.rope_cache, attention_masks, positions)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h
