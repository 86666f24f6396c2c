"""MuonClip on GDA heads: a constructed hot head is clipped to the threshold, every other head is untouched, and the
result is the same on FSDP shards (2 gloo ranks, ``fully_shard``, maxima MAX-reduced across ranks) as on the full
matrices. Row scaling on the TP x FSDP / HSDP layouts TorchTitan builds is checked in tests/test_muon.py."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from motif_titan.model import GroupedDiffAttention, Motif2ModelArgs
from motif_titan.model.model import precompute_rope_cache
from motif_titan.optim.muon_clip import qk_clip

from gloo_ranks import run_on_gloo_ranks

ARGS = Motif2ModelArgs(dim=32, n_layers=2, n_heads=10, n_kv_heads=4, n_noise_heads=2, head_dim=8,
                       ffn_hidden_dim=64, vocab_size=64, max_seq_len=64, rope_theta=10_000.0)
HOT_SIGNAL, HOT_NOISE = 1, 9  # q head 1: signal head of group 0 (K1 shared by 4 heads); 9: noise head of group 1


def _attention(seed=0):
    torch.manual_seed(seed)
    attn = GroupedDiffAttention(ARGS, layer_id=1)
    with torch.no_grad():
        attn.init_weights(0.02)
        for hot in (HOT_SIGNAL, HOT_NOISE):
            attn.wq.weight[hot * 8:(hot + 1) * 8] *= 60.0
    attn.track_max_logits = True
    return attn


def _max_logits(attn, x):
    attn.max_logits.fill_(float("-inf"))
    attn(x, precompute_rope_cache(8, 64, 10_000.0), None)
    return attn.max_logits.clone()


def _heads(attn):
    return [SimpleNamespace(wq=attn.wq.weight, wk=attn.wk.weight, head_dim=8,
                            kv_head_for_q_head=attn.kv_head_for_q_head, max_logits=attn.max_logits)]


def test_kv_head_layout():
    attn = _attention()
    assert attn.kv_head_for_q_head == (0, 0, 0, 0, 1, 2, 2, 2, 2, 3)


def test_recorded_max_logits_are_the_causal_maxima():
    attn = _attention()
    x = torch.randn(2, 12, 32)
    recorded = _max_logits(attn, x)
    rope = precompute_rope_cache(8, 64, 10_000.0)
    from motif_titan.model.model import apply_rotary_emb
    q = attn.wq(x).view(2, 12, 10, 8)
    k = attn.wk(x).view(2, 12, 4, 8)
    q, k = apply_rotary_emb(q, k, rope)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    for h, kv in enumerate(attn.kv_head_for_q_head):
        scores = torch.einsum("bqd,bkd->bqk", q[:, :, h], k[:, :, kv]) / 8 ** 0.5
        assert recorded[h].item() == pytest.approx(scores[:, causal].max().item(), rel=1e-5)


def test_hot_heads_clipped_to_threshold_others_untouched():
    attn = _attention()
    x = torch.randn(2, 16, 32)
    before = _max_logits(attn, x)
    others = [h for h in range(10) if h not in (HOT_SIGNAL, HOT_NOISE)]
    threshold = 1.05 * before[others].max().item()
    assert before[HOT_SIGNAL] > 2 * threshold and before[HOT_NOISE] > 2 * threshold
    wv, wo = attn.wv.weight.clone(), attn.wo.weight.clone()
    stats = qk_clip(_heads(attn), threshold, alpha=0.5)
    assert stats == {"max_logit": pytest.approx(before.max().item()), "heads_clipped": 2}
    assert torch.isinf(attn.max_logits).all()  # reset for the next step
    after = _max_logits(attn, x)
    assert after[HOT_SIGNAL].item() == pytest.approx(threshold, rel=1e-4)
    assert after[HOT_NOISE].item() == pytest.approx(threshold, rel=1e-4)
    assert torch.equal(after[others], before[others])
    assert torch.equal(attn.wv.weight, wv) and torch.equal(attn.wo.weight, wo)


def _check_sharded_clip(rank: int, world: int) -> None:
    attn = _attention()
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
    attn = _attention(seed=rank)
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
