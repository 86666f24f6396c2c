"""MuonClip on GDA heads: a constructed hot head is clipped to the threshold, every other head is untouched, and the
result is the same on FSDP shards (2 gloo ranks, ``fully_shard``, maxima MAX-reduced across ranks) as on the full
matrices. Row scaling on the TP x FSDP / HSDP layouts TorchTitan builds is checked in tests/integration/test_muon_ranks.py."""

import pytest
import torch

from motif_titan.model.model import apply_rotary_emb, precompute_rope_cache
from motif_titan.optim.max_logits import MaxLogitRecorder, causal_max_logits
from motif_titan.optim.muon_clip import qk_clip

from helpers.gda_fixtures import HOT_NOISE, HOT_SIGNAL, hot_attention

ROPE = precompute_rope_cache(8, 64, 10_000.0)


def _recorded(attn):
    """hot_attention with a max-logit recorder on it (layer 1 of 2)."""
    return attn, MaxLogitRecorder({1: attn}, n_layers=2)


def _max_logits(attn, recorder, x):
    recorder.reset()
    attn(x, ROPE, None)
    return recorder.heads[0].max_logits.clone()


def _reference_max_logits(attn, x, query_pos=None, key_pos=None):
    """Per q head, the causal max of q . k / sqrt(d) in float64 from the projections, one head at a time."""
    q = attn.wq(x).view(*x.shape[:2], 10, 8)
    k = attn.wk(x).view(*x.shape[:2], 4, 8)
    q, k = (t.double() for t in apply_rotary_emb(q, k, ROPE))
    seq = x.shape[1]
    query_pos = torch.arange(seq) if query_pos is None else query_pos
    key_pos = torch.arange(seq) if key_pos is None else key_pos
    visible = key_pos[None, :] <= query_pos[:, None]
    return torch.stack([
        (torch.einsum("bqd,bkd->bqk", q[:, query_pos, h], k[:, key_pos, kv]) / 8 ** 0.5)[:, visible].max()
        for h, kv in enumerate(attn.kv_head_for_q_head)])


def test_kv_head_layout():
    attn = hot_attention()
    assert attn.kv_head_for_q_head == (0, 0, 0, 0, 1, 2, 2, 2, 2, 3)


def test_recorded_max_logits_are_the_causal_maxima():
    attn, recorder = _recorded(hot_attention())
    x = torch.randn(2, 12, 32)
    recorded = _max_logits(attn, recorder, x)
    q = attn.wq(x).view(2, 12, 10, 8)
    k = attn.wk(x).view(2, 12, 4, 8)
    q, k = apply_rotary_emb(q, k, ROPE)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    for h, kv in enumerate(attn.kv_head_for_q_head):
        scores = torch.einsum("bqd,bkd->bqk", q[:, :, h], k[:, :, kv]) / 8 ** 0.5
        assert recorded[h].item() == pytest.approx(scores[:, causal].max().item(), rel=1e-5)


def test_hot_heads_clipped_to_threshold_others_untouched():
    attn, recorder = _recorded(hot_attention())
    x = torch.randn(2, 16, 32)
    before = _max_logits(attn, recorder, x)
    others = [h for h in range(10) if h not in (HOT_SIGNAL, HOT_NOISE)]
    threshold = 1.05 * before[others].max().item()
    assert before[HOT_SIGNAL] > 2 * threshold and before[HOT_NOISE] > 2 * threshold
    wv, wo = attn.wv.weight.clone(), attn.wo.weight.clone()
    stats = qk_clip(recorder.heads, threshold, alpha=0.5)
    assert stats == {"max_logit": pytest.approx(before.max().item()), "heads_clipped": 2}
    assert torch.isinf(recorder.heads[0].max_logits).all()  # reset for the next step
    after = _max_logits(attn, recorder, x)
    assert after[HOT_SIGNAL].item() == pytest.approx(threshold, rel=1e-4)
    assert after[HOT_NOISE].item() == pytest.approx(threshold, rel=1e-4)
    assert torch.equal(after[others], before[others])
    assert torch.equal(attn.wv.weight, wv) and torch.equal(attn.wo.weight, wo)


def test_recorder_matches_a_float64_qk_reference_in_query_blocks():
    """The recording in query blocks smaller than the sequence, against float64 QK^T over whole rows; and with
    explicit positions (a context-parallel rank's queries, head-tail shards, against every key)."""
    torch.manual_seed(1)
    attn, recorder = _recorded(hot_attention())
    x = torch.randn(3, 20, 32)
    with torch.no_grad():
        q = attn.wq(x).view(3, 20, 10, 8)
        k = attn.wk(x).view(3, 20, 4, 8)
        q, k = (t.transpose(1, 2) for t in apply_rotary_emb(q, k, ROPE))
    kv_for_q = torch.tensor(attn.kv_head_for_q_head)
    reference = _reference_max_logits(attn, x)
    blocked = causal_max_logits(q, k, kv_for_q, query_block=6)
    torch.testing.assert_close(blocked.double(), reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(_max_logits(attn, recorder, x), causal_max_logits(q, k, kv_for_q))
    held = torch.cat([torch.arange(0, 5), torch.arange(15, 20)])
    sharded = causal_max_logits(q[:, :, held], k, kv_for_q, held, torch.arange(20), query_block=4)
    torch.testing.assert_close(sharded.double(), _reference_max_logits(attn, x, held), rtol=1e-5, atol=1e-5)


def test_probe_without_a_hook_compiles_to_nothing_and_a_hooked_one_into_the_graph():
    """fullgraph (as TorchTitan compiles each block): a graph break would raise. Unhooked, the graph holds no
    recording op; hooked, the recording is in the one graph and gives the eager maxima."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    attn = hot_attention()
    x = torch.randn(2, 12, 32)
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(attn, backend=backend, fullgraph=True)(x, ROPE, None)
    assert len(graphs) == 1 and "amax" not in graphs[0] and "index_select" not in graphs[0]
    attn, recorder = _recorded(attn)
    eager = _max_logits(attn, recorder, x)
    torch._dynamo.reset()
    recorder.reset()
    with torch.no_grad():
        torch.compile(attn, backend=backend, fullgraph=True)(x, ROPE, None)
    assert len(graphs) == 2 and "amax" in graphs[1] and "index_select" in graphs[1]
    torch.testing.assert_close(recorder.heads[0].max_logits, eager, rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()


def test_skipped_first_forward_is_not_recorded():
    """A pipeline stage's shape-inference pass: the part's next forward leaves the maxima alone, later ones record."""
    attn, recorder = _recorded(hot_attention())
    recorder.skip_first_forward(attn)
    x = torch.randn(2, 12, 32)
    attn(torch.full_like(x, float("nan")), ROPE, None)
    assert torch.isinf(recorder.heads[0].max_logits).all()
    assert torch.isfinite(_max_logits(attn, recorder, x)).all()
