"""The experiment's own check, outside the CI suite (the kernel is not used by the model): the fused wide-value
attention kernels against explicit float64 attention (outputs, log-sum-exp, q / k / v gradients, both dq
strategies). Run it with ``TRITON_INTERPRET=1 python -m pytest -q benchmarks/experiments`` on a CPU, or without the
variable on a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wide_value_attention as wva  # noqa: E402

# CUDA tensors where a GPU exists (compiled, autotuned kernels), else CPU tensors through the Triton interpreter
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
# max |kernel - reference| / max |reference|, per tensor
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}
D, DV = 16, 32


def _tensor(gen, shape, dtype, layout):
    """(B, H, S, W) tensor: contiguous ("bhsd"), a transposed (B, S, H, W) tensor ("bshd"), or the first W
    columns of a (B, S, H, 2W) tensor, transposed ("bshd_sliced": row strides that are not the width)."""
    b, h, s, w = shape
    if layout == "bhsd":
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
    elif layout == "bshd":
        t = torch.randn(b, s, h, w, generator=gen, dtype=torch.float64).transpose(1, 2)
    else:
        t = torch.randn(b, s, h, 2 * w, generator=gen, dtype=torch.float64)[..., :w].transpose(1, 2)
    return t.to(dtype=dtype, device=DEVICE)


def _inputs(b, h_q, h_kv, s, dtype, seed, layout="bhsd", d=D, dv=DV):
    gen = torch.Generator().manual_seed(seed)
    q = _tensor(gen, (b, h_q, s, d), dtype, layout)
    k = _tensor(gen, (b, h_kv, s, d), dtype, layout)
    v = _tensor(gen, (b, h_kv, s, dv), dtype, layout)
    do = _tensor(gen, (b, h_q, s, dv), dtype, layout)
    return q, k, v, do


def _reference(q, k, v, do, scale=None):
    """float64 (o, lse, [dq, dk, dv]) of causal GQA attention written out: scores, -inf above the diagonal,
    softmax, times V; gradients by float64 autograd."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k_rep, v_rep = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k_rep.transpose(-1, -2) * scale
    s = q.shape[2]
    causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    o = torch.softmax(scores, dim=-1) @ v_rep
    o.backward(do.double())
    return o.detach(), lse.detach(), [q.grad, k.grad, v.grad]


def _kernel(q, k, v, do, scale=None, dq_mode=None):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    o = wva.wide_value_attention(*leaves, scale, dq_mode=dq_mode)
    o.backward(do)
    return o.detach(), [t.grad for t in leaves]


def _assert_close(actual, expected, tol, what):
    err = ((actual.double() - expected).abs().max() / expected.abs().max()).item()
    assert err <= tol, f"{what}: max error {err:.3g} x max|reference| > {tol}"


def _check_against_reference(q, k, v, do, dq_mode, scale=None):
    o, grads = _kernel(q, k, v, do, scale, dq_mode)
    ref_o, _, ref_grads = _reference(q, k, v, do, scale)
    tol = TOL[q.dtype]
    assert o.dtype == q.dtype and o.shape == ref_o.shape
    _assert_close(o, ref_o, tol, "o")
    for name, grad, ref_grad, leaf in zip(("dq", "dk", "dv"), grads, ref_grads, (q, k, v)):
        assert grad.dtype == leaf.dtype and grad.shape == leaf.shape, name
        _assert_close(grad, ref_grad, tol, name)


@pytest.mark.parametrize("dq_mode", wva.DQ_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("s", [40, 32])
@pytest.mark.parametrize("h_q,h_kv", [(4, 2), (2, 2)], ids=["gqa", "mha"])
def test_forward_and_gradients_match_float64(h_q, h_kv, s, dtype, dq_mode):
    # batch 2: the (batch, head) program index is split the right way for q heads and kv heads
    _check_against_reference(*_inputs(2, h_q, h_kv, s, dtype, seed=s + h_q), dq_mode)


@pytest.mark.parametrize("s", [40, 32, 7])
@pytest.mark.parametrize("h_q,h_kv", [(4, 2), (2, 2)], ids=["gqa", "mha"])
def test_lse_matches_logsumexp(h_q, h_kv, s):
    q, k, v, do = _inputs(1, h_q, h_kv, s, torch.float32, seed=3)
    o, lse = wva.wide_value_attention_fwd(q, k, v)
    ref_o, ref_lse, _ = _reference(q, k, v, do)
    assert lse.dtype == torch.float32 and lse.shape == (1, h_q, s)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=1e-5)
    _assert_close(o, ref_o, TOL[torch.float32], "o")


@pytest.mark.parametrize("dq_mode", wva.DQ_MODES)
def test_explicit_scale(dq_mode):
    """A scale other than D ** -0.5 reaches the scores (forward) and dq / dk (backward)."""
    _check_against_reference(*_inputs(1, 4, 2, 40, torch.float32, seed=5), dq_mode, scale=0.7)


@pytest.mark.parametrize("dq_mode", wva.DQ_MODES)
@pytest.mark.parametrize("layout", ["bshd", "bshd_sliced"])
def test_strided_inputs(layout, dq_mode):
    """Transposed (B, S, H, D) views and column slices, with a transposed upstream gradient, through strides."""
    q, k, v, do = _inputs(2, 4, 2, 40, torch.float32, seed=11, layout=layout)
    assert not any(t.is_contiguous() for t in (q, k, v, do))
    _check_against_reference(q, k, v, do, dq_mode)


@pytest.mark.skipif(not INTERPRETED, reason="on CUDA the autotuner picks the blocks")
@pytest.mark.parametrize("dq_mode", wva.DQ_MODES)
@pytest.mark.parametrize("blocks", [(32, 16), (16, 32)], ids=["m32n16", "m16n32"])
def test_unequal_query_and_key_blocks(monkeypatch, blocks, dq_mode):
    """BLOCK_M != BLOCK_N in every kernel: the diagonal ranges (which blocks need the causal mask) still cover
    exactly the causal triangle."""
    monkeypatch.setattr(wva, "INTERPRETER_BLOCKS", {kind: blocks for kind in wva.INTERPRETER_BLOCKS})
    _check_against_reference(*_inputs(1, 4, 2, 40, torch.float32, seed=13), dq_mode)


def test_causal():
    """Changing the last key and value changes only the last query's output (and any earlier change shows)."""
    q, k, v, _ = _inputs(1, 2, 2, 40, torch.float32, seed=17)
    o = wva.wide_value_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 1.0
    v2[:, :, -1] += 1.0
    o2 = wva.wide_value_attention(q, k2, v2)
    assert torch.equal(o[:, :, :-1], o2[:, :, :-1])
    assert (o[:, :, -1] - o2[:, :, -1]).abs().max() > 1e-2


def test_default_dq_mode_is_atomic():
    assert wva.DQ_MODE == "atomic"


def _bad():
    q, k, v, _ = _inputs(1, 4, 2, 32, torch.float32, seed=0)
    return {"q": q, "k": k, "v": v}


@pytest.mark.parametrize("changes,match", [
    (lambda a: {"q": a["q"][0]}, r"q must be 4-D"),
    (lambda a: {"v": a["v"][..., None]}, r"v must be 4-D"),
    (lambda a: {"k": a["k"].repeat(2, 1, 1, 1)}, r"k must have q's batch size B = 1 and sequence length S = 32"),
    (lambda a: {"v": a["v"][:, :, :16]}, r"v must have q's batch size B = 1 and sequence length S = 32"),
    (lambda a: {"v": a["v"][:, :1]}, r"v must have k's head count Hkv = 2"),
    (lambda a: {"k": a["k"].repeat(1, 1, 1, 2), "v": a["v"]}, r"k must have q's head dim D = 16"),
    (lambda a: {"k": a["k"][:, :1].repeat(1, 3, 1, 1), "v": a["v"][:, :1].repeat(1, 3, 1, 1)},
     r"Hq = 4 must be divisible by k/v's head count Hkv = 3"),
    (lambda a: {"q": a["q"][..., :8], "k": a["k"][..., :8]}, r"D \(last dim of q and k\) must be a power of two "
                                                            r"in \[16, 256\], got 8"),
    (lambda a: {"q": a["q"][..., :12], "k": a["k"][..., :12]}, r"D .* got 12"),
    (lambda a: {"q": a["q"].repeat(1, 1, 1, 32), "k": a["k"].repeat(1, 1, 1, 32)}, r"D .* got 512"),
    (lambda a: {"v": a["v"][..., :24]}, r"Dv \(last dim of v\) must be a power of two in \[16, 256\], got 24"),
    (lambda a: {"v": a["v"].half()}, r"q, k, v must share one dtype .*got q torch.float32, k torch.float32, "
                                     r"v torch.float16"),
    (lambda a: {k: t.double() for k, t in a.items()}, r"q, k, v must share one dtype out of \(torch.bfloat16, "
                                                      r"torch.float16, torch.float32\)"),
    (lambda a: {"v": a["v"].to("meta")}, r"q, k, v must be on one device"),
], ids=["q-3d", "v-5d", "batch", "seq", "kv-heads", "head-dim", "gqa-divisible", "d-small", "d-not-pow2",
        "d-large", "dv-not-pow2", "mixed-dtype", "fp64", "device"])
def test_validation_errors(changes, match):
    args = _bad()
    args.update(changes(args))
    with pytest.raises(ValueError, match=match):
        wva.wide_value_attention(args["q"], args["k"], args["v"])


def test_validation_of_dq_mode_and_scale():
    q, k, v, _ = _inputs(1, 4, 2, 32, torch.float32, seed=0)
    with pytest.raises(ValueError, match=r"dq_mode = 'fused'; allowed: \('atomic', 'separate'\)"):
        wva.wide_value_attention(q, k, v, dq_mode="fused")
    with pytest.raises(ValueError, match=r"scale must be a finite float, got inf"):
        wva.wide_value_attention(q, k, v, float("inf"))


@pytest.mark.skipif(not INTERPRETED, reason="CPU tensors only")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, _ = _inputs(1, 2, 2, 16, torch.float32, seed=0)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        wva.wide_value_attention(q, k, v)


def test_autotune_configs_fit_the_model_heads():
    """For the model's heads (D = 128, Dv = 256, bf16) every kernel keeps some configurations after the
    shared-memory / register pruning, all within the budgets, and the widest tiles are pruned."""
    for kind in ("fwd", "dkdv", "dkdv_atomic", "dq"):
        kept = wva.pruned_configs(kind, 128, 256, torch.bfloat16)
        assert kept, kind
        for m, n, warps, stages in kept:
            smem, regs = wva.config_cost(kind, m, n, warps, stages, 128, 256, 2)
            assert smem <= wva.SMEM_BUDGET and regs <= wva.REG_BUDGET, (kind, m, n, warps, stages)
        assert (128, 128, 8, 2) not in kept, kind
        # narrow heads keep more of the sweep
        assert len(wva.pruned_configs(kind, 16, 32, torch.bfloat16)) > len(kept), kind


def test_import_without_interpreter():
    """The module imports (kernels compiled lazily, autotuners built) without TRITON_INTERPRET and without a GPU."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "import triton; import wide_value_attention as w; "
            "assert isinstance(w._fwd_kernel, triton.runtime.JITFunction), type(w._fwd_kernel); "
            "assert isinstance(w._dkdv_atomic_tuned, triton.runtime.Autotuner); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
