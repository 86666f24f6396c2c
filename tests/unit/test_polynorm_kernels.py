"""The fused PolyNorm kernels (Triton; through TRITON_INTERPRET=1 on CPU) against the float64 formula."""

import pytest
import torch

from motif_titan.kernels import poly_norm, poly_norm_mul, polynorm_triton
from helpers.polynorm_float64 import polynorm_formula

EPS = 1e-6
# CUDA tensors where a GPU exists (compiled kernels), else CPU tensors through the Triton interpreter (conftest)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _inputs(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    mul = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.tensor([0.7, -0.4, 1.1]) + 0.1 * torch.randn(3, generator=gen)
    b = 0.3 * torch.randn(1, generator=gen)
    grad_y = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return tuple(t.to(DEVICE) for t in (x, mul, w, b, grad_y))


def _reference_grads(x, mul, w, b, grad_y):
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)] + (
        [mul.detach().double().requires_grad_()] if mul is not None else [])
    y = polynorm_formula(leaves[0], leaves[1], leaves[2], EPS)
    if mul is not None:
        y = y * leaves[3]
    y.backward(grad_y.double())
    return y.detach(), [t.grad for t in leaves]


def _kernel_grads(x, mul, w, b, grad_y):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)] + (
        [mul.detach().clone().requires_grad_()] if mul is not None else [])
    if mul is None:
        y = poly_norm(leaves[0], leaves[1], leaves[2], EPS, backend="triton")
    else:
        y = poly_norm_mul(leaves[0], leaves[3], leaves[1], leaves[2], EPS, backend="triton")
    y.backward(grad_y)
    return y.detach(), [t.grad for t in leaves]


def _assert_matches(got, want, dtype, what):
    # relative to the size of the reference values, so tolerances mean the same for every gradient
    scale = want.abs().max().item() + 1e-12
    err = (got.double() - want).abs().max().item() / scale
    assert err <= TOL[dtype], f"{what}: max error {err:.2e} of max |ref| {scale:.3g} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("with_mul", [False, True], ids=["poly_norm", "poly_norm_mul"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(3, 64), (2, 3, 100), (2, 257)])
def test_kernel_values_and_grads_match_float64(shape, dtype, with_mul):
    x, mul, w, b, grad_y = _inputs(shape, dtype, seed=sum(shape))
    mul = mul if with_mul else None
    y, grads = _kernel_grads(x, mul, w, b, grad_y)
    y_ref, grads_ref = _reference_grads(x, mul, w, b, grad_y)
    assert y.dtype == dtype and y.shape == x.shape
    _assert_matches(y, y_ref, dtype, "y")
    for name, got, want in zip(["grad_x", "grad_weight", "grad_bias", "grad_mul"], grads, grads_ref):
        assert got.dtype == (dtype if name in ("grad_x", "grad_mul") else torch.float32)
        _assert_matches(got, want, dtype, name)


@pytest.mark.parametrize("with_mul", [False, True], ids=["poly_norm", "poly_norm_mul"])
@pytest.mark.parametrize("programs_per_sm", [0, 2])
def test_chunked_long_row_path_matches_float64(monkeypatch, with_mul, programs_per_sm):
    """Long rows loop over chunks (two passes); shrink the limits to run that path here. With programs_per_sm
    the grid is smaller than the row count and programs loop over rows (on CPU: 2 programs for 3 rows)."""
    monkeypatch.setattr(polynorm_triton, "CHUNKED_PROGRAMS_PER_SM", programs_per_sm)
    monkeypatch.setattr(polynorm_triton, "MAX_FUSED_ROW", {key: 64 for key in polynorm_triton.MAX_FUSED_ROW})
    monkeypatch.setattr(polynorm_triton, "CHUNK", {key: 32 for key in polynorm_triton.CHUNK})
    monkeypatch.setattr(polynorm_triton, "CHUNKED_WARPS", {key: 4 for key in polynorm_triton.CHUNKED_WARPS})
    chunked = (32, False, 4, programs_per_sm)
    assert polynorm_triton.fwd_launch_config(100, with_mul) == polynorm_triton.bwd_launch_config(100, with_mul)
    assert polynorm_triton.fwd_launch_config(100, with_mul) == chunked
    x, mul, w, b, grad_y = _inputs((3, 100), torch.float32, seed=11)
    mul = mul if with_mul else None
    y, grads = _kernel_grads(x, mul, w, b, grad_y)
    y_ref, grads_ref = _reference_grads(x, mul, w, b, grad_y)
    _assert_matches(y, y_ref, torch.float32, "y")
    for got, want in zip(grads, grads_ref):
        _assert_matches(got, want, torch.float32, "grad")


def test_bf16_inputs_up_to_50_stay_finite_and_correct():
    """x^6 reaches 1.6e10: beyond fp16's range, fine in the kernels' fp32 accumulation."""
    x, mul, w, b, grad_y = _inputs((4, 96), torch.bfloat16, seed=5)
    x = (x.double() * 50 / x.double().abs().max()).to(torch.bfloat16)
    assert x.abs().max().item() == 50
    for with_mul in (False, True):
        m = mul if with_mul else None
        y, grads = _kernel_grads(x, m, w, b, grad_y)
        y_ref, grads_ref = _reference_grads(x, m, w, b, grad_y)
        assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
        _assert_matches(y, y_ref, torch.bfloat16, "y")
        for got, want in zip(grads, grads_ref):
            _assert_matches(got, want, torch.bfloat16, "grad")


def test_weight_grads_are_deterministic():
    x, mul, w, b, grad_y = _inputs((16, 48), torch.float32, seed=2)
    with _deterministic():
        first = _kernel_grads(x, mul, w, b, grad_y)[1]
        second = _kernel_grads(x, mul, w, b, grad_y)[1]
    for a, c in zip(first, second):
        assert torch.equal(a, c)


class _deterministic:
    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before)


def test_compiles_without_graph_breaks():
    x, mul, w, b, grad_y = _inputs((2, 4, 32), torch.float32, seed=3)

    def ffn_activation(x, mul, w, b):
        return poly_norm_mul(x * 2.0, mul, w, b, EPS, backend="triton") + poly_norm(x, w, b, EPS, backend="triton")

    compiled = torch.compile(ffn_activation, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in (x, mul, w, b)]
    out = compiled(*leaves)
    out.backward(grad_y)
    eager_leaves = [t.clone().requires_grad_() for t in (x, mul, w, b)]
    eager = ffn_activation(*eager_leaves)
    eager.backward(grad_y)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for a, c in zip(leaves, eager_leaves):
        torch.testing.assert_close(a.grad, c.grad, rtol=0, atol=0)


def test_backend_choice():
    x, mul, w, b, _ = _inputs((2, 16), torch.float32, seed=4)
    with pytest.raises(ValueError, match=r"backend = 'cuda'; allowed: \('auto', 'triton', 'torch'\)"):
        poly_norm(x, w, b, backend="cuda")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        poly_norm(x, w[:2], b)
    with pytest.raises(ValueError, match=r"mul must have the shape of x \(2, 16\)"):
        poly_norm_mul(x, mul[:, :8], w, b)
    # auto on CPU tensors is the reference, bit for bit
    from motif_titan.kernels import poly_norm_reference
    x, w, b = x.cpu(), w.cpu(), b.cpu()
    assert torch.equal(poly_norm(x, w, b, backend="auto"), poly_norm_reference(x, w, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel is the automatic choice only on CUDA")
def test_model_ffn_uses_the_fused_kernel_on_cuda(monkeypatch):
    from motif_titan.kernels import polynorm
    from motif_titan.model import PolyNormFeedForward

    calls = []
    fused = polynorm.poly_norm_mul_fwd
    monkeypatch.setattr(polynorm, "poly_norm_mul_fwd", lambda *a: calls.append(1) or fused(*a))
    ffn = PolyNormFeedForward(dim=64, hidden_dim=256, eps=EPS).cuda()
    with torch.no_grad():
        ffn.init_weights(0.02)
    x = torch.randn(2, 8, 64, device="cuda")
    out = ffn(x)
    assert calls == [1]
    want = ffn.w2(poly_norm_mul(ffn.w1(x), ffn.w3(x), ffn.poly_norm.weight, ffn.poly_norm.bias, EPS,
                                backend="torch"))
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
