"""Inference passes of a loaded ``Motif2Model``: the final hidden states of whole sequences, and greedy decoding with
a key/value cache (prefill once, then one token per step attending over the cached keys and values).

The cached pass runs the model's own modules and math: each layer's ``attention_norm`` / ``ffn_norm`` /
``feed_forward``, and GDA's ``project_heads`` (wq / wk / wv, RoPE at the tokens' positions) and ``combine_heads``
(lambda, subln, (1 - lambda_init), wo). Only the attention call differs from the training forward: an explicit
mask (causal over cache slots, padding and unwritten slots hidden) instead of ``is_causal``, since the queries are
the last slots of a longer key sequence. Prompts are left-padded, so every row's new token sits in the same cache
slot; each row's RoPE positions count its own tokens only, so a row computes what it computes alone.

Every step attends over the whole cache (its unwritten slots masked), so the attention's shapes stay the same from
step to step: on CUDA, SDPA's cuDNN backend builds a graph per new shape (CPU time on every call with a new
shape; no benchmark in the repo measures it), which a key length growing by one each step would rebuild at every
call. On CUDA the capacity is also
rounded up to a multiple of ``CUDA_CAPACITY_MULTIPLE`` so that batches of similar lengths share graphs.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from motif_titan.model import Motif2Model
from motif_titan.model.model import GroupedDiffAttention

CUDA_CAPACITY_MULTIPLE = 256


@torch.no_grad()
def final_hidden(model: Motif2Model, tokens: torch.Tensor) -> torch.Tensor:
    """``Motif2Model.forward`` without the output head: (bs, seq, dim) after the final norm, causal attention over
    each row (positions 0..seq-1). The head is left to the caller, which applies it to the positions it scores."""
    h = model.tok_embeddings(tokens)
    for layer in model.layers.values():
        h = layer(h, model.rope_cache, None)
    return model.norm(h)


@dataclass
class KVCache:
    """Per layer, the post-RoPE K1 / K2 keys (bs, G, capacity, d) and the V1 || V2 values (bs, G, capacity, 2d) of
    every slot written so far (``length``); ``key_valid`` (bs, capacity) marks the slots that hold tokens (False:
    left padding)."""

    k1: list[torch.Tensor]
    k2: list[torch.Tensor]
    v: list[torch.Tensor]
    key_valid: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, model: Motif2Model, batch: int, capacity: int) -> "KVCache":
        args = model.model_args
        weight = model.tok_embeddings.weight
        shape = (batch, args.n_noise_heads, capacity, args.head_dim)
        wide = (*shape[:-1], 2 * args.head_dim)
        n = len(model.layers)
        return cls(
            k1=[weight.new_zeros(shape) for _ in range(n)],
            k2=[weight.new_zeros(shape) for _ in range(n)],
            v=[weight.new_zeros(wide) for _ in range(n)],
            key_valid=torch.zeros(batch, capacity, dtype=torch.bool, device=weight.device),
        )

    def attention_mask(self, n_new: int) -> torch.Tensor:
        """(bs, 1, n_new, capacity) bool: the query in slot i (length <= i < length + n_new) sees key slot j <= i
        holding a token, and always itself (so a padding slot's softmax has a term: no NaN enters the cache)."""
        key = torch.arange(self.key_valid.shape[1], device=self.key_valid.device)
        query = key[self.length:self.length + n_new, None]
        sees = (key[None, :] <= query) & (self.key_valid[:, None, :] | (key[None, :] == query))
        return sees[:, None]


def _masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      joint: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with a 2d-wide value, in one call or one per value half, as
    ``GroupedDiffAttention._attend_wide_v`` does for the training forward (kv heads shared GQA-style)."""
    enable_gqa = q.shape[1] != k.shape[1]

    def attend(value: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, value, attn_mask=mask, enable_gqa=enable_gqa)

    if joint:
        return attend(v)
    v1, v2 = v.chunk(2, dim=-1)
    return torch.cat([attend(v1.contiguous()), attend(v2.contiguous())], dim=-1)


def _cached_attention(attention: GroupedDiffAttention, x: torch.Tensor, rope_cache: torch.Tensor,
                      positions: torch.Tensor, cache: KVCache, layer: int, mask: torch.Tensor) -> torch.Tensor:
    """One GDA layer over the new slots ``x`` (bs, n, dim): their keys and values go into the cache, their
    queries attend over the whole cache (``mask`` hides what they must not see)."""
    q_signal, q_noise, k1, k2, v = attention.project_heads(x, rope_cache, positions)
    start, end = cache.length, cache.length + x.shape[1]
    cache.k1[layer][:, :, start:end] = k1
    cache.k2[layer][:, :, start:end] = k2
    cache.v[layer][:, :, start:end] = v
    keys1, keys2, values = cache.k1[layer], cache.k2[layer], cache.v[layer]
    signal = _masked_attention(q_signal.contiguous(), keys1, values, mask, attention.joint_value("signal"))
    noise = _masked_attention(q_noise.contiguous(), keys2, values, mask, attention.joint_value("noise"))
    return attention.combine_heads(signal, noise, x.dtype)


@torch.no_grad()
def cached_forward(model: Motif2Model, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (bs, vocab) of the last of the new slots ``tokens`` (bs, n) at RoPE ``positions`` (bs, n), appended
    to ``cache`` (whose ``key_valid`` must already mark the new slots). Each block is TransformerBlock's pre-norm
    residual form, h = x + attn(norm1(x)); out = h + ffn(norm2(h)), with the cached attention."""
    n_new = tokens.shape[1]
    mask = cache.attention_mask(n_new)
    h = model.tok_embeddings(tokens)
    for index, layer in enumerate(model.layers.values()):
        h = h + _cached_attention(layer.attention, layer.attention_norm(h), model.rope_cache, positions, cache,
                                  index, mask)
        h = h + layer.feed_forward(layer.ffn_norm(h))
    cache.length += n_new
    return model.output(model.norm(h[:, -1]))


@dataclass
class Generation:
    """What ``greedy_generate`` returns per row: the generated tokens (an eos that ended it included) and, when
    asked, the logits (vocab,) each token was the argmax of."""

    tokens: list[int]
    logits: list[torch.Tensor] | None = None


@torch.no_grad()
def greedy_generate(
    model: Motif2Model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    keep_logits: bool = False,
) -> list[Generation]:
    """Greedy continuations of ``prompts`` (token lists, batched together, left-padded): at most
    ``max_new_tokens`` each; a row ends at ``eos_id`` or when ``should_stop(row, tokens so far)`` is true. The
    prompt is prefilled in one pass, then each step feeds one token per row. Prompt + new tokens must fit the
    model's RoPE table (``max_seq_len``)."""
    if not prompts or max_new_tokens < 1:
        return [Generation([], [] if keep_logits else None) for _ in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("greedy_generate: every prompt needs at least one token")
    device = model.tok_embeddings.weight.device
    batch, width = len(prompts), max(len(p) for p in prompts)
    if width + max_new_tokens > model.model_args.max_seq_len:
        raise ValueError(f"greedy_generate: {width} prompt tokens + {max_new_tokens} new tokens exceed the model's "
                         f"max_seq_len {model.model_args.max_seq_len}")
    tokens = torch.zeros(batch, width, dtype=torch.long)
    valid = torch.zeros(batch, width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
        valid[row, width - len(prompt):] = True
    tokens, valid = tokens.to(device), valid.to(device)
    positions = (valid.long().cumsum(dim=1) - 1).clamp_min(0)  # each row counts its own tokens from 0

    capacity = width + max_new_tokens
    if device.type == "cuda":
        capacity = -(-capacity // CUDA_CAPACITY_MULTIPLE) * CUDA_CAPACITY_MULTIPLE
    cache = KVCache.empty(model, batch, capacity)
    cache.key_valid[:, :width] = valid
    logits = cached_forward(model, tokens, positions, cache)
    next_position = positions[:, -1:] + 1
    out = [Generation([], [] if keep_logits else None) for _ in range(batch)]
    done = [False] * batch
    for step in range(max_new_tokens):
        chosen = logits.argmax(dim=-1)
        for row, token in enumerate(chosen.tolist()):
            if done[row]:
                continue
            out[row].tokens.append(token)
            if keep_logits:
                out[row].logits.append(logits[row].float().cpu())
            if token == eos_id or (should_stop is not None and should_stop(row, out[row].tokens)):
                done[row] = True
        if all(done) or step == max_new_tokens - 1:
            break
        cache.key_valid[:, cache.length] = True
        logits = cached_forward(model, chosen[:, None], next_position, cache)
        next_position = next_position + 1
    return out
