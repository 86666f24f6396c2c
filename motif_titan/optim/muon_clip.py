"""MuonClip (QK-Clip, Kimi K2) on the max logits ``max_logits.MaxLogitRecorder`` records.

After an optimizer step, every q head h whose max pre-softmax logit S_h over the step (MAX-all-reduced over all
ranks per layer index, so DP / CP / TP ranks agree and ranks holding different layers keep their own) exceeds the
threshold tau gets gamma = tau / S_h:
- if its kv head serves only h (GDA's K2 noise heads; every head with ratio 1), the rows of W_q for h are scaled by
  gamma^alpha and the rows of W_k for the kv head by gamma^(1 - alpha): S_h becomes tau;
- if its kv head is shared (GDA's K1 serves the group's R signal heads), only the W_q rows of h are scaled, by gamma:
  S_h becomes tau and the heads sharing the key are left exactly as they were.
V and W_o are never touched. Rows are scaled on each rank's local shard of W_q / W_k: the map from a head's global
rows to local rows is read from the parameter's placements (FSDP, HSDP, TP, TP x FSDP's strided shards).
"""

from collections import Counter
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .shard_layout import local_block, local_tensor


@torch.no_grad()
def scale_rows(param: Tensor, start: int, stop: int, factor: float) -> None:
    """Multiply global rows [start, stop) of a (possibly sharded) 2-D parameter by ``factor``, in place."""
    local = local_tensor(param)
    for rows in local_block(param).local_rows_of(start, stop):
        local[rows].mul_(factor)


@torch.no_grad()
def qk_clip(heads: Sequence, threshold: float, alpha: float = 0.5) -> dict[str, float]:
    """Clip every layer in ``heads`` (objects with wq, wk, head_dim, kv_head_for_q_head, max_logits, such as
    ``max_logits.QKClipHeads``); reset the recorded maxima for the next step. Returns {"max_logit": largest S over
    all heads, "heads_clipped": count}, over all layers of the model on every rank.

    Heads that also carry ``layer_index`` and ``n_layers`` (the recorder's do) are reduced by their layer index in the
    whole model, so pipeline stages, which hold different layers, each get their own layers' maxima. Without
    them, layers are matched by their position in ``heads``: every rank must then hold the same layers."""
    if not heads:
        return {"max_logit": float("-inf"), "heads_clipped": 0}
    local = torch.stack([h.max_logits for h in heads]).float()
    indices = [getattr(h, "layer_index", None) for h in heads]
    if all(i is not None for i in indices):
        table = local.new_full((heads[0].n_layers, local.shape[1]), float("-inf"))
        table[indices] = local
    else:
        table, indices = local, list(range(len(heads)))
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(table, op=dist.ReduceOp.MAX)
    for layer, logits in zip(heads, table[indices].tolist()):
        d = layer.head_dim
        sharing = Counter(layer.kv_head_for_q_head)
        for q_head, (s, kv_head) in enumerate(zip(logits, layer.kv_head_for_q_head)):
            if s <= threshold:
                continue
            gamma = threshold / s
            if sharing[kv_head] == 1:
                scale_rows(layer.wq, q_head * d, (q_head + 1) * d, gamma ** alpha)
                scale_rows(layer.wk, kv_head * d, (kv_head + 1) * d, gamma ** (1 - alpha))
            else:
                scale_rows(layer.wq, q_head * d, (q_head + 1) * d, gamma)
        layer.max_logits.fill_(float("-inf"))
    return {"max_logit": float(table.max()), "heads_clipped": int((table > threshold).sum())}
