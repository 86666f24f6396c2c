"""MuonClip on GDA heads: a constructed hot head is clipped to the threshold, every other head is untouched, and the
result is the same on FSDP shards (2 gloo ranks, ``fully_shard``, maxima MAX-reduced across ranks) as on the full
matrices. Row scaling on the TP x FSDP / HSDP layouts TorchTitan builds is checked in tests/integration/test_muon_ranks.py."""

from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from motif_titan.optim.muon_clip import qk_clip

from helpers.gda_fixtures import HOT_NOISE, HOT_SIGNAL, hot_attention
from helpers.gloo_ranks import run_on_gloo_ranks


def _check_sharded_clip(rank: int, world: int) -> None:
    attn = hot_attention()
    full_q, full_k = attn.wq.weight.detach().clone(), attn.wk.weight.detach().clone()
    logits = torch.tensor([float(h + 1) for h in range(10)])
    logits[HOT_SIGNAL] = 50.0 + 10 * rank  # the global max (60) comes from rank 1
    logits[HOT_NOISE] = 40.0 - 10 * rank  # ... and this one (40) from rank 0
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("dp_shard",))
    # the projections sharded the way TorchTitan shards them: fully_shard over the dp mesh
    projections = torch.nn.ModuleDict({"wq": torch.nn.Linear(32, full_q.shape[0], bias=False),
                                       "wk": torch.nn.Linear(32, full_k.shape[0], bias=False)})
    with torch.no_grad():
        projections.wq.weight.copy_(full_q)
        projections.wk.weight.copy_(full_k)
    for projection in projections.values():
        fully_shard(projection, mesh=mesh)
    wq, wk = projections.wq.weight, projections.wk.weight
    heads = [SimpleNamespace(wq=wq, wk=wk, head_dim=8, kv_head_for_q_head=attn.kv_head_for_q_head,
                             max_logits=logits.clone())]
    stats = qk_clip(heads, threshold=20.0, alpha=0.5)
    ref_q, ref_k = full_q.clone(), full_k.clone()
    ref_logits = torch.tensor([float(h + 1) for h in range(10)])
    ref_logits[HOT_SIGNAL], ref_logits[HOT_NOISE] = 60.0, 40.0
    ref_heads = [SimpleNamespace(wq=ref_q, wk=ref_k, head_dim=8, kv_head_for_q_head=attn.kv_head_for_q_head,
                                 max_logits=ref_logits)]
    dist.barrier()
    # the reference runs without a group: hide the default group from qk_clip's all-reduce
    ref_stats = _without_all_reduce(qk_clip, ref_heads, 20.0, 0.5)
    ok = (torch.equal(wq.full_tensor(), ref_q) and torch.equal(wk.full_tensor(), ref_k) and stats == ref_stats
          and stats["heads_clipped"] == 2 and stats["max_logit"] == 60.0)
    assert ok, f"sharded clip differs from the full-matrix clip: {stats} vs {ref_stats}"


def _without_all_reduce(fn, *args):
    original = dist.all_reduce
    dist.all_reduce = lambda *a, **k: None
    try:
        return fn(*args)
    finally:
        dist.all_reduce = original


def test_muon_clip_on_fsdp_shards_matches_full_matrices(tmp_path):
    run_on_gloo_ranks(tmp_path, 2, _check_sharded_clip, timeout_s=60)


def _check_layers_by_index(rank: int, world: int) -> list[str]:
    """Rank r holds only layer r of a 2-layer model (as a pipeline stage would): each layer must be clipped with
    its own maxima, and the stats must cover both layers on both ranks."""
    attn = hot_attention(seed=rank)
    full_q, full_k = attn.wq.weight.detach().clone(), attn.wk.weight.detach().clone()
    logits = torch.full((10,), 1.0)
    logits[HOT_NOISE if rank == 0 else HOT_SIGNAL] = 40.0 if rank == 0 else 60.0
    wq, wk = torch.nn.Parameter(full_q.clone()), torch.nn.Parameter(full_k.clone())
    heads = [SimpleNamespace(wq=wq, wk=wk, head_dim=8, kv_head_for_q_head=attn.kv_head_for_q_head,
                             max_logits=logits.clone(), layer_index=rank, n_layers=2)]
    stats = qk_clip(heads, threshold=20.0, alpha=0.5)
    ref_heads = [SimpleNamespace(wq=full_q, wk=full_k, head_dim=8, kv_head_for_q_head=attn.kv_head_for_q_head,
                                 max_logits=logits)]
    _without_all_reduce(qk_clip, ref_heads, 20.0, 0.5)  # this layer alone, on its own maxima
    failures = []
    if not (torch.equal(wq.detach(), full_q) and torch.equal(wk.detach(), full_k)):
        failures.append("the layer was not clipped with its own maxima")
    if stats != {"max_logit": 60.0, "heads_clipped": 2}:
        failures.append(f"stats {stats}, expected both layers: max 60.0, 2 heads")
    return failures


def test_muon_clip_reduces_by_layer_index_when_ranks_hold_different_layers(tmp_path):
    run_on_gloo_ranks(tmp_path, 2, _check_layers_by_index, timeout_s=60)


