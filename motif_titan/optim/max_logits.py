"""MuonClip's max-logit recorder: per layer and q head, the largest pre-softmax logit q . k / sqrt(d) seen by the
forwards since the last reset, for ``qk_clip``.

A forward hook on each attention layer's ``qk_probe`` (the hook point that hands out the post-RoPE q and k of a
forward, heads in ``wq`` / ``wk`` row order) computes QK^T only (no softmax, no PV), in query blocks so the score
tile stays small, with causal masking only: with document masks the maxima also see cross-document pairs, an upper
bound, so clipping errs on the safe side. The model describes its layers (``attention_layers()``: wq, wk,
head_dim, kv_head_for_q_head, qk_probe); the parallel layout comes from outside the model:
- tensor parallelism: each rank computes the contiguous block of whole kv groups its tp rank holds (column-parallel
  ``wq`` / ``wk``), so its maxima land at their global head index from ``q_head_offset`` on;
- context parallelism: the rank holds some positions of every sequence (``positions``, the same for every row);
  the keys and their positions are all-gathered over the cp mesh, and MuonClip's MAX over ranks then gives the
  whole sequence's maxima;
- pipeline parallelism: at its first step torch's pipeline stage runs each stage once on placeholder inputs to infer
  shapes (``torch.empty`` after the first stage; seen on gloo to hold NaN); each part's first forward is not
  recorded (on the first stage that pass sees a copy of the real first micro-batch, which its real forward records
  again, so nothing is lost).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed._functional_collectives as funcol
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh

from .shard_layout import local_tensor


@dataclass
class QKClipHeads:
    """What MuonClip needs of one attention layer: the projections whose rows it scales, the head layout, and the
    per-q-head max logits recorded since the last reset (over all q heads; this rank fills those it computes)."""

    wq: Tensor
    wk: Tensor
    head_dim: int
    kv_head_for_q_head: tuple[int, ...]
    max_logits: Tensor
    layer_index: int  # among n_layers over all pipeline stages
    n_layers: int
    q_head_offset: int = 0  # the first q head this rank computes


@torch.no_grad()
def causal_max_logits(q: Tensor, k: Tensor, kv_for_q: Tensor, query_pos: Tensor | None = None,
                      key_pos: Tensor | None = None, query_block: int = 512) -> Tensor:
    """Per q head, the max over batch, queries and causal keys of q . k / sqrt(d), in fp32: q (bs, q heads, seq,
    d), k (bs, kv heads, keys, d), q head i reading kv head ``kv_for_q[i]``. Query / key positions default to
    0 .. seq - 1 for both (keys past a query block's last query are then skipped); pass them when the queries are
    some positions of a longer key sequence (context parallelism)."""
    d, seqlen = q.shape[-1], q.shape[2]
    contiguous = query_pos is None
    if contiguous:
        query_pos = key_pos = torch.arange(seqlen, device=q.device)
    k = k.float().index_select(1, kv_for_q)
    maxima = torch.full((q.shape[1],), float("-inf"), device=q.device)
    for start in range(0, seqlen, query_block):
        stop = min(start + query_block, seqlen)
        visible = stop if contiguous else key_pos.numel()
        future = key_pos[None, :visible] > query_pos[start:stop, None]
        scores = (q[:, :, start:stop].float() @ k[:, :, :visible].transpose(-1, -2)) * d ** -0.5
        scores = scores.masked_fill(future, float("-inf"))
        maxima = torch.maximum(maxima, scores.amax(dim=(0, 2, 3)))
    return maxima


class _LayerRecording:
    """The forward hook on one layer's ``qk_probe``: folds the forward's per-head maxima into ``heads.max_logits``."""

    def __init__(self, heads: QKClipHeads, kv_for_q: Tensor, cp_mesh: DeviceMesh | None):
        self.heads, self.kv_for_q, self.cp_mesh = heads, kv_for_q, cp_mesh
        self.paused = False

    @torch.no_grad()
    def __call__(self, probe: nn.Module, args: tuple, output) -> None:
        if self.paused:
            return
        xq, xk, positions = (*args, None)[:3]
        q, k = xq.transpose(1, 2), xk.transpose(1, 2)  # (bs, heads, seq, d)
        query_pos = key_pos = None
        if self.cp_mesh is not None:
            # this rank's positions (head-tail shards are not contiguous) against every rank's keys
            query_pos = positions[0].long()
            key_pos = funcol.all_gather_tensor(query_pos, gather_dim=0, group=self.cp_mesh)
            k = funcol.all_gather_tensor(k.contiguous(), gather_dim=2, group=self.cp_mesh)
        per_head = causal_max_logits(q, k, self.kv_for_q, query_pos, key_pos)
        offset = self.heads.q_head_offset
        local = self.heads.max_logits[offset:offset + per_head.numel()]
        torch.maximum(local, per_head, out=local)


class MaxLogitRecorder:
    """Records the max logits of ``attentions`` ({layer index among ``n_layers``: attention}, each with wq, wk,
    head_dim, kv_head_for_q_head and qk_probe) from now on; ``heads`` is what ``qk_clip`` reads. ``tp_mesh``: the
    mesh whose ranks split the heads (column-parallel wq / wk); ``cp_mesh``: the mesh whose ranks split the
    sequence. Read after parallelization (FSDP has swapped in DTensor parameters)."""

    def __init__(self, attentions: Mapping[int, nn.Module], n_layers: int, tp_mesh: DeviceMesh | None = None,
                 cp_mesh: DeviceMesh | None = None):
        tp_rank, tp = (tp_mesh.get_local_rank(), tp_mesh.size()) if tp_mesh is not None else (0, 1)
        self.heads: list[QKClipHeads] = []
        self._recordings: dict[nn.Module, _LayerRecording] = {}
        for layer_index, attention in sorted(attentions.items()):
            layout = tuple(attention.kv_head_for_q_head)
            n_q, n_kv = len(layout), max(layout) + 1
            q_offset, kv_offset = tp_rank * (n_q // tp), tp_rank * (n_kv // tp)
            kv_for_q = [layout[h] - kv_offset for h in range(q_offset, q_offset + n_q // tp)]
            if n_q % tp or n_kv % tp or not all(0 <= kv < n_kv // tp for kv in kv_for_q):
                raise ValueError(f"layer {layer_index}: {n_q} q heads reading kv heads {layout} do not split into "
                                 f"{tp} tensor-parallel blocks of whole kv groups")
            device = local_tensor(attention.wq.weight).device
            heads = QKClipHeads(
                wq=attention.wq.weight, wk=attention.wk.weight, head_dim=attention.head_dim,
                kv_head_for_q_head=layout, max_logits=torch.full((n_q,), float("-inf"), device=device),
                layer_index=layer_index, n_layers=n_layers, q_head_offset=q_offset,
            )
            recording = _LayerRecording(heads, torch.tensor(kv_for_q, device=device), cp_mesh)
            attention.qk_probe.register_forward_hook(recording)
            self._recordings[attention.qk_probe] = recording
            self.heads.append(heads)

    def reset(self) -> None:
        """Forget the recorded maxima (all -inf)."""
        for heads in self.heads:
            heads.max_logits.fill_(float("-inf"))

    def skip_first_forward(self, part: nn.Module) -> None:
        """Do not record the layers of ``part`` during its next forward (a pipeline stage's shape inference)."""
        recordings = [self._recordings[m] for m in part.modules() if m in self._recordings]

        def before(module, args, kwargs):
            for recording in recordings:
                recording.paused = True

        def after(module, args, kwargs, output):
            for recording in recordings:
                recording.paused = False
            pre.remove()
            post.remove()

        pre = part.register_forward_pre_hook(before, with_kwargs=True)
        post = part.register_forward_hook(after, with_kwargs=True)


def record_max_logits(model_parts: list[nn.Module], parallel_dims) -> MaxLogitRecorder | None:
    """The recorder for the attention layers the model parts describe (``attention_layers()``, layer indices among
    the part's ``n_layers``) on TorchTitan's ``parallel_dims`` layout: the tp and cp meshes, and with pipeline
    parallelism each part's first forward skipped. None when no part describes its attention layers."""
    attentions, n_layers = {}, 0
    for part in model_parts:
        if hasattr(part, "attention_layers"):
            attentions.update(part.attention_layers())
            n_layers = part.n_layers
    if not attentions:
        return None
    recorder = MaxLogitRecorder(attentions, n_layers,
                                tp_mesh=parallel_dims.get_mesh("tp") if parallel_dims.tp_enabled else None,
                                cp_mesh=parallel_dims.get_mesh("cp") if parallel_dims.cp_enabled else None)
    if parallel_dims.pp_enabled:
        for part in model_parts:
            recorder.skip_first_forward(part)
    return recorder
