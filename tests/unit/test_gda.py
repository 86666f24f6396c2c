"""Grouped Differential Attention against plain float64 references written from the spec formula."""

import dataclasses
import math

import pytest
import torch

from torchtitan.config import ConfigManager

from motif_titan.model import GroupedDiffAttention, Motif2ModelArgs, lambda_init_for_layer, motif2_args
from motif_titan.model.args import validate_model_fields
from motif_titan.model.model import precompute_rope_cache


VALUE_PATHS = ("auto", "split", "joint", "joint_noise")


def _args(n_heads: int, n_noise_heads: int, head_dim: int = 8, dim: int = 24, **kw) -> Motif2ModelArgs:
    return Motif2ModelArgs(dim=dim, n_layers=3, n_heads=n_heads, n_kv_heads=2 * n_noise_heads,
                           n_noise_heads=n_noise_heads, head_dim=head_dim, ffn_hidden_dim=32, vocab_size=64,
                           max_seq_len=32, rope_theta=10_000.0, **kw)


def _random_attention(args: Motif2ModelArgs, layer_id: int, seed: int) -> GroupedDiffAttention:
    torch.manual_seed(seed)
    attn = GroupedDiffAttention(args, layer_id).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.3)
        attn.subln.weight.copy_(1.0 + 0.5 * torch.randn_like(attn.subln.weight))
    return attn


def _rope_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE on one head's (seq, d) matrix, computed entry by entry."""
    seq, d = x.shape
    out = torch.empty_like(x)
    half = d // 2
    for pos in range(seq):
        for i in range(half):
            angle = pos * theta ** (-2.0 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[pos, i].item(), x[pos, i + half].item()
            out[pos, i] = a * c - b * s
            out[pos, i + half] = b * c + a * s
    return out


def _causal_softmax_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    seq, d = q.shape
    scores = q @ k.T / math.sqrt(d)
    probs = torch.zeros(seq, seq, dtype=torch.float64)
    for i in range(seq):
        row = scores[i, : i + 1]
        e = torch.exp(row - row.max())
        probs[i, : i + 1] = e / e.sum()
    return probs


def gda_reference(attn: GroupedDiffAttention, args: Motif2ModelArgs, layer_id: int, x: torch.Tensor) -> torch.Tensor:
    """spec/model.md, literally: explicit loops over batch, groups and signal heads, float64 throughout."""
    d, G = args.head_dim, args.n_noise_heads
    R = (args.n_heads - G) // G
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * (layer_id - 1))
    lam = (math.exp((attn.lambda_q1 * attn.lambda_k1).sum().item())
           - math.exp((attn.lambda_q2 * attn.lambda_k2).sum().item()) + lam_init)
    wq, wk, wv, wo = (m.weight.detach() for m in (attn.wq, attn.wk, attn.wv, attn.wo))
    subln_w, eps = attn.subln.weight.detach(), attn.subln.eps
    bs, seq, _ = x.shape
    out = torch.zeros(bs, seq, args.dim, dtype=torch.float64)
    for b in range(bs):
        xb = x[b]
        heads = []
        for g in range(G):
            k1 = _rope_reference(xb @ wk[(2 * g) * d:(2 * g + 1) * d].T, args.rope_theta)
            k2 = _rope_reference(xb @ wk[(2 * g + 1) * d:(2 * g + 2) * d].T, args.rope_theta)
            v = torch.cat([xb @ wv[(2 * g) * d:(2 * g + 1) * d].T, xb @ wv[(2 * g + 1) * d:(2 * g + 2) * d].T], 1)
            noise_head = (R + 1) * g + R
            q_noise = _rope_reference(xb @ wq[noise_head * d:(noise_head + 1) * d].T, args.rope_theta)
            noise_map = _causal_softmax_map(q_noise, k2)
            for j in range(R):
                head = (R + 1) * g + j
                q = _rope_reference(xb @ wq[head * d:(head + 1) * d].T, args.rope_theta)
                o = (_causal_softmax_map(q, k1) - lam * noise_map) @ v  # (seq, 2d)
                o = o / torch.sqrt((o * o).mean(dim=1, keepdim=True) + eps) * subln_w
                heads.append(o * (1.0 - lam_init))
        out[b] = torch.cat(heads, dim=1) @ wo.T  # signal head s = R*g + j at columns 2d*s
    return out


def _rope_cache(args: Motif2ModelArgs) -> torch.Tensor:
    return precompute_rope_cache(args.head_dim, args.max_seq_len, args.rope_theta, torch.float64)


@pytest.mark.parametrize("value_path", VALUE_PATHS)
@pytest.mark.parametrize("n_heads,n_noise_heads,layer_id", [(4, 2, 0), (10, 2, 5), (5, 1, 1)])
def test_gda_matches_float64_reference(n_heads, n_noise_heads, layer_id, value_path):
    args = _args(n_heads, n_noise_heads, gda_value_path=value_path)
    attn = _random_attention(args, layer_id, seed=n_heads + layer_id)
    x = torch.randn(2, 7, args.dim, dtype=torch.float64)
    got = attn(x, _rope_cache(args), None)
    want = gda_reference(attn, args, layer_id, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_gda_ratio_1_is_the_differential_transformer():
    """Ratio 1 in the Diff-Transformer's own formulation: 2h q/k heads paired (even = first map, odd = second),
    h value heads of width 2d, maps viewed as (h, 2, seq, seq) and combined as w[:, 0] - lambda * w[:, 1]."""
    h, d = 3, 8
    args = _args(n_heads=2 * h, n_noise_heads=h, head_dim=d)
    attn = _random_attention(args, layer_id=2, seed=7)
    x = torch.randn(2, 9, args.dim, dtype=torch.float64)
    bs, seq, _ = x.shape
    rope = _rope_cache(args)
    cos, sin = rope[:seq, :d], rope[:seq, d:]

    def rot(t):  # (bs, seq, heads, d)
        t1, t2 = t[..., : d // 2], t[..., d // 2:]
        return t * cos[None, :, None] + torch.cat([-t2, t1], -1) * sin[None, :, None]

    q = rot(attn.wq(x).view(bs, seq, 2 * h, d)).transpose(1, 2)
    k = rot(attn.wk(x).view(bs, seq, 2 * h, d)).transpose(1, 2)
    v = attn.wv(x).view(bs, seq, h, 2 * d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    w = torch.softmax(scores, dim=-1).view(bs, h, 2, seq, seq)
    lam = (torch.exp((attn.lambda_q1 * attn.lambda_k1).sum()) - torch.exp((attn.lambda_q2 * attn.lambda_k2).sum())
           + attn.lambda_init)
    o = (w[:, :, 0] - lam * w[:, :, 1]) @ v
    o = attn.subln(o) * (1 - attn.lambda_init)
    want = attn.wo(o.transpose(1, 2).reshape(bs, seq, -1))
    torch.testing.assert_close(attn(x, rope, None), want, rtol=1e-10, atol=1e-10)


def test_gda_is_causal():
    args = _args(n_heads=10, n_noise_heads=2)
    attn = _random_attention(args, layer_id=3, seed=3)
    x = torch.randn(1, 12, args.dim, dtype=torch.float64)
    x_future_changed = x.clone()
    x_future_changed[:, 8:] = torch.randn(1, 4, args.dim, dtype=torch.float64)
    rope = _rope_cache(args)
    a, b = attn(x, rope, None), attn(x_future_changed, rope, None)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-12)
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3


def test_lambda_init_per_layer():
    assert lambda_init_for_layer(0) == pytest.approx(-0.0099152, abs=1e-7)
    assert lambda_init_for_layer(1) == pytest.approx(0.2, abs=1e-15)
    assert lambda_init_for_layer(39) == pytest.approx(0.8 - 0.6 * math.exp(-11.4), abs=1e-15)
    assert lambda_init_for_layer(39) == pytest.approx(0.7999933, abs=1e-7)
    args = _args(n_heads=10, n_noise_heads=2)
    assert GroupedDiffAttention(args, 39).lambda_init == lambda_init_for_layer(39)
    assert "lambda_init" not in GroupedDiffAttention(args, 39).state_dict()


@pytest.mark.parametrize("value_path", ["joint", "joint_noise"])
def test_joint_value_paths_give_the_split_gradients(value_path):
    """One call with the 2d-wide value and two d-wide calls are the same function: equal gradients for every
    parameter and for the input (float64)."""
    grads = {}
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    for path in ("split", value_path):
        args = _args(10, 2, gda_value_path=path)
        attn = _random_attention(args, layer_id=4, seed=5)
        xin = x.clone().requires_grad_()
        out = attn(xin, _rope_cache(args), None)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        grads[path] = {"x": xin.grad, **{n: p.grad for n, p in attn.named_parameters()}}
    assert grads["split"].keys() == grads[value_path].keys()
    for name, g in grads["split"].items():
        torch.testing.assert_close(grads[value_path][name], g, rtol=1e-10, atol=1e-12, msg=name)


def test_which_attention_takes_the_joint_value():
    def joint(value_path, attn_type="sdpa", cp=False):
        mask = "block_causal" if attn_type == "flex" else "causal"
        args = _args(10, 2, attn_type=attn_type, attn_mask_type=mask, gda_value_path=value_path)
        if cp:  # "auto" is resolved when the args take the job
            args.update_from_config(_job("--parallelism.context_parallel_degree", "2", "--training.seq_len", "32"))
        attn = GroupedDiffAttention(args, 0)
        return attn.joint_value("signal"), attn.joint_value("noise")

    assert joint("split") == (False, False)
    assert joint("joint") == (True, True)
    assert joint("joint_noise") == (False, True)
    assert joint("auto") == (False, True)  # SDPA: joint noise attention, the fastest on an H100
    assert joint("auto", attn_type="flex") == (False, False)
    assert joint("auto", cp=True) == (False, False)  # ring attention: verified with d-wide values only


def _job(*cli):
    return ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config", "--model.name",
                                       "motif2", "--model.flavor", "debugmodel", *cli])


def test_gda_value_path_errors_name_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"Motif2ModelArgs.gda_value_path: must be one of \('auto', 'split', "
                                         r"'joint', 'joint_noise'\), got 'fused'"):
        _args(10, 2, gda_value_path="fused")
    with pytest.raises(ValueError, match=r"Motif2ModelArgs.gda_value_path: 'joint' needs attn_type='sdpa'"):
        _args(10, 2, attn_type="flex", attn_mask_type="block_causal", gda_value_path="joint")
    args = dataclasses.replace(motif2_args["debugmodel"])
    with pytest.raises(ValueError, match=r"model.gda_value_path = 'fused'; allowed: \['auto', 'split', 'joint', "
                                         r"'joint_noise'\]"):
        validate_model_fields(_job("--model.gda_value_path", "fused").model)
    flex = dataclasses.replace(motif2_args["debugmodel_flex_attn"])
    with pytest.raises(ValueError, match=r"model.gda_value_path = 'joint_noise' with a flex attention flavor"):
        flex.update_from_config(_job("--model.gda_value_path", "joint_noise"))
    with pytest.raises(NotImplementedError, match=r"model.gda_value_path = 'joint' with "
                                                  r"parallelism.context_parallel_degree = 2"):
        args.update_from_config(_job("--model.gda_value_path", "joint", "--parallelism.context_parallel_degree", "2",
                                     "--training.seq_len", "256"))


def test_model_gda_value_path_overrides_the_flavor():
    args = dataclasses.replace(motif2_args["debugmodel"])
    assert args.gda_value_path == "auto"
    args.update_from_config(_job())  # unset: the flavor's own
    assert args.gda_value_path == "auto"
    args.update_from_config(_job("--model.gda_value_path", "split"))
    assert args.gda_value_path == "split"
    assert motif2_args["debugmodel"].gda_value_path == "auto"


def _fp32_attention_with_dots(dot1: float, dot2: float, seed: int = 11):
    """A float32 GDA layer whose lambda exponents are lambda_q1 . lambda_k1 = dot1 and lambda_q2 . lambda_k2 =
    dot2 (up to fp32 rounding), and its float64 copy."""
    import copy

    args = _args(n_heads=10, n_noise_heads=2)
    attn = _random_attention(args, layer_id=3, seed=seed).float()
    d = args.head_dim
    with torch.no_grad():
        for (q, k), dot in (((attn.lambda_q1, attn.lambda_k1), dot1), ((attn.lambda_q2, attn.lambda_k2), dot2)):
            q.fill_(math.sqrt(abs(dot) / d))
            k.fill_(math.copysign(math.sqrt(abs(dot) / d), dot))
    return args, attn, copy.deepcopy(attn).double()


def _spec_lambda(attn) -> torch.Tensor:
    """spec/model.md's formula as written, in the parameters' dtype."""
    return (torch.exp(torch.sum(attn.lambda_q1 * attn.lambda_k1)) - torch.exp(torch.sum(attn.lambda_q2 * attn.lambda_k2))
            + attn.lambda_init)


@pytest.mark.parametrize("dot1,dot2", [(0.03, -0.02), (2.5, 1.0), (-40.0, 11.0), (80.0, 3.0), (88.0, 87.5), (88.72, 1.0)])
def test_lambda_is_the_spec_formula_bit_for_bit_where_it_is_finite(dot1, dot2):
    _, attn, _ = _fp32_attention_with_dots(dot1, dot2)
    want = _spec_lambda(attn)
    assert torch.isfinite(want)
    assert torch.equal(attn.lambda_full().detach(), want.detach())
    lam, past_limit = attn.lambda_stats()
    assert torch.equal(lam, want.detach()) and int(past_limit) == 0
    if abs(float(want.detach())) <= 2.0 ** 16:
        # the output's rescaling is a multiplication by exactly 1.0 there: the layer computes what it did before
        from motif_titan.model.model import _inverse_lambda_scale

        assert float(_inverse_lambda_scale(want)) == 1.0


@pytest.mark.parametrize("dot1,dot2,past_limit", [(80.0, 0.5, 0), (100.0, 0.5, 1), (0.5, 300.0, 1), (120.0, 95.0, 2),
                                                  (150.0, 149.0, 2)])
def test_huge_or_overflowing_lambda_gives_finite_outputs_equal_to_float64(dot1, dot2, past_limit):
    """exp(80) = 5.5e34 is finite in fp32 but signal - lambda * noise then overflows the RMSNorm's mean square
    (the output would be 0); past 88.7 the spec formula's lambda is inf and every output NaN. Ours stays finite
    and, since the RMSNorm is scale-invariant, equals the float64 layer (whose lambda is still finite): the
    output is then noise / rms(noise) whatever lambda's exact size, as long as lambda keeps its sign."""
    args, attn, attn64 = _fp32_attention_with_dots(dot1, dot2)
    if past_limit:
        assert not torch.isfinite(_spec_lambda(attn))
    lam, n_past = attn.lambda_stats()
    assert torch.isfinite(lam) and int(n_past) == past_limit
    assert math.copysign(1.0, float(lam)) == math.copysign(1.0, dot1 - dot2)
    x = torch.randn(2, 9, args.dim, generator=torch.Generator().manual_seed(5))
    out = attn(x, _rope_cache(args).float(), None)
    assert torch.isfinite(out).all()
    want = gda_reference(attn64, args, 3, x.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    for name, p in attn.named_parameters():
        assert torch.isfinite(p.grad).all(), name
