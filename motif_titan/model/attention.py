"""The attention calls GDA makes and the flex masks it takes, in torch alone (no TorchTitan import), so that the
model is the same code under every TorchTitan version.

Each GDA attention call goes through a module with q, k, v first and ``block_mask`` as a keyword: TorchTitan's
context-parallel plans wrap such modules (0.2.2: ``apply_cp_to_attention_module``), whatever their class.
"""

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, and_masks, create_block_mask, flex_attention

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class CausalSDPA(nn.Module):
    """Causal ``F.scaled_dot_product_attention`` as a module (q, k, v first), so that TorchTitan's context parallel
    plan can wrap each GDA attention call (ring attention over the sequence shards)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, enable_gqa: bool = False) -> torch.Tensor:
        if enable_gqa and q.dtype == torch.float32 and q.device.type == "cuda":
            # CUDA's fp32 kernel (efficient attention) takes no GQA: SDPA would fall back to the math kernel, which
            # ring attention (context parallelism) cannot run. Repeat each kv head for its q heads instead.
            k, v = (repeat_heads(t, q.shape[1] // t.shape[1]) for t in (k, v))
            enable_gqa = False
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)


def repeat_heads(t: torch.Tensor, times: int) -> torch.Tensor:
    """(bs, heads, seq, d) -> (bs, heads * times, seq, d), each head repeated ``times`` times in place (as GQA
    pairs q head i with kv head i // times); expand + reshape keeps a sequence-sharded DTensor sharded."""
    bs, heads, seq, d = t.shape
    return t.unsqueeze(2).expand(bs, heads, times, seq, d).reshape(bs, heads * times, seq, d)


class FlexAttention(nn.Module):
    """``flex_attention`` under one process-wide ``torch.compile`` (uncompiled, flex materializes the whole score
    matrix). The compiled function is a class attribute so that every layer shares one compile cache; inductor's
    max-autotune without CUDA graphs, the options TorchTitan uses for its own flex module."""

    compiled: ClassVar[Callable] = torch.compile(
        flex_attention,
        options={
            "wrap_inductor_compiled_regions": True,
            "max_autotune": True,
            "coordinate_descent_tuning": True,
            "triton.cudagraphs": False,
        },
    )

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_mask: BlockMask, enable_gqa: bool = False
    ) -> torch.Tensor:
        return FlexAttention.compiled(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def causal_mask_mod() -> MaskMod:
    def causal(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return q_idx >= kv_idx

    return causal


def document_ids(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(bs, seq) -> the index of the document each position belongs to: a document ends with its eos token (which
    stays in it), and a row's last position always closes one."""
    ends = tokens == eos_id
    ends[:, -1] = True
    ids = torch.zeros_like(tokens, dtype=torch.int32)
    ids[:, 1:] = torch.cumsum(ends.to(torch.int32), dim=1)[:, :-1]
    return ids


def document_mask_mod(tokens: torch.Tensor, eos_id: int) -> MaskMod:
    """Attention only within a position's own document (``document_ids``)."""
    ids = document_ids(tokens, eos_id)

    def same_document(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return ids[b, q_idx] == ids[b, kv_idx]

    return same_document


_compiled_create_block_mask = torch.compile(create_block_mask)


def block_mask(tokens: torch.Tensor, eos_id: int | None) -> BlockMask:
    """The flex mask of a (bs, seq) batch: causal, and within documents when ``eos_id`` is given (one mask per
    row then; causal alone is one mask broadcast over the batch)."""
    seqlen = tokens.shape[1]
    if eos_id is None:
        return _compiled_create_block_mask(causal_mask_mod(), 1, None, seqlen, seqlen)
    mask = and_masks(causal_mask_mod(), document_mask_mod(tokens, eos_id))
    return _compiled_create_block_mask(mask, tokens.shape[0], None, seqlen, seqlen)
