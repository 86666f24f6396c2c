"""MuonClip on GDA heads: a constructed hot head is clipped to the threshold, every other head is untouched, and the
result is the same on FSDP shards (2 gloo ranks, ``fully_shard``, maxima MAX-reduced across ranks) as on the full
matrices. Row scaling on the TP x FSDP / HSDP layouts TorchTitan builds is checked in tests/integration/test_muon_ranks.py."""

from types import SimpleNamespace

import pytest
import torch

from motif_titan.model.model import precompute_rope_cache
from motif_titan.optim.muon_clip import qk_clip


from helpers.gda_fixtures import HOT_NOISE, HOT_SIGNAL, hot_attention


def _max_logits(attn, x):
    attn.max_logits.fill_(float("-inf"))
    attn(x, precompute_rope_cache(8, 64, 10_000.0), None)
    return attn.max_logits.clone()


def _heads(attn):
    return [SimpleNamespace(wq=attn.wq.weight, wk=attn.wk.weight, head_dim=8,
                            kv_head_for_q_head=attn.kv_head_for_q_head, max_logits=attn.max_logits)]


def test_kv_head_layout():
    attn = hot_attention()
    assert attn.kv_head_for_q_head == (0, 0, 0, 0, 1, 2, 2, 2, 2, 3)


def test_recorded_max_logits_are_the_causal_maxima():
    attn = hot_attention()
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
    attn = hot_attention()
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










