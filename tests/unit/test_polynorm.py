"""PolyNorm and the PolyNorm gated FFN against the float64 formula of spec/model.md (values and gradients)."""

import pytest
import torch

from motif_titan.kernels import poly_norm_mul_reference, poly_norm_reference, polynorm_row_moments
from motif_titan.model import PolyNormFeedForward

from helpers.polynorm_float64 import EPS, polynorm_formula


def analytic_backward(x, w, g, eps=EPS):
    """The spec's derivation: dL/dz_k = (w_k / r_k)(g - n_k mean(g n_k)); dL/dx = 3x^2 dz3 + 2x dz2 + dz1."""
    grads_z, grad_w = {}, torch.empty(3, dtype=torch.float64)
    for k, wk_index in ((3, 0), (2, 1), (1, 2)):
        z = x ** k
        r = torch.sqrt((z * z).mean(-1, keepdim=True) + eps)
        n = z / r
        grads_z[k] = (w[wk_index] / r) * (g - n * (g * n).mean(-1, keepdim=True))
        grad_w[wk_index] = (g * n).sum()
    grad_x = 3 * x ** 2 * grads_z[3] + 2 * x * grads_z[2] + grads_z[1]
    return grad_x, grad_w, g.sum().reshape(1)


def _inputs(shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    w = (torch.rand(3, generator=gen, dtype=torch.float64) + 0.2).to(torch.float32)
    b = torch.randn(1, generator=gen, dtype=torch.float64).to(torch.float32)
    return x, w, b


@pytest.mark.parametrize("shape", [(5, 64), (2, 3, 100), (1, 1, 7)])
def test_polynorm_values_and_grads_match_float64_formula(shape):
    x, w, b = _inputs(shape, seed=sum(shape))
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = poly_norm_reference(x, w, b, EPS)
    assert y.dtype == torch.float32
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = polynorm_formula(x64, w64, b64)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)

    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y.backward(g.float())
    y64.backward(g)
    for got, want in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_spec_backward_derivation_equals_autograd_in_float64():
    x, w, b = _inputs((4, 33), seed=3, dtype=torch.float64)
    x.requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    g = torch.randn(4, 33, dtype=torch.float64)
    poly_norm_reference(x, w64, b64, EPS).backward(g)
    grad_x, grad_w, grad_b = analytic_backward(x.detach(), w64.detach(), g)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w64.grad, grad_w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b64.grad, grad_b, rtol=1e-10, atol=1e-10)


def test_polynorm_bf16_large_inputs_are_finite_and_computed_in_fp32():
    x, w, b = _inputs((3, 256), seed=5)
    x = (x * 50 / x.abs().max()).to(torch.bfloat16)  # |x| up to 50: x^6 ~ 1.6e10 overflows fp16, not fp32
    y = poly_norm_reference(x, w, b, EPS)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), polynorm_formula(x.double(), w, b), rtol=1e-2, atol=1e-2)


def test_row_moments_are_mean_of_even_powers():
    x, _, _ = _inputs((2, 3, 16), seed=9, dtype=torch.float64)
    m = polynorm_row_moments(x)
    for i, p in enumerate((2, 4, 6)):
        torch.testing.assert_close(m[..., i], (x ** p).mean(-1), rtol=1e-12, atol=0)


def test_polynorm_ffn_is_w2_of_polynorm_gate_times_up():
    torch.manual_seed(0)
    ffn = PolyNormFeedForward(dim=12, hidden_dim=20, eps=EPS)
    with torch.no_grad():
        ffn.init_weights(0.02)
        assert ffn.poly_norm.weight.tolist() == pytest.approx([1 / 3] * 3) and ffn.poly_norm.bias.item() == 0
        ffn.poly_norm.weight.copy_(torch.tensor([0.5, -0.2, 0.9]))
        ffn.poly_norm.bias.fill_(0.1)
    x = torch.randn(2, 5, 12)
    w1, w2, w3 = (m.weight.detach().double() for m in (ffn.w1, ffn.w2, ffn.w3))
    xd = x.double()
    want = (polynorm_formula(xd @ w1.T, ffn.poly_norm.weight, ffn.poly_norm.bias) * (xd @ w3.T)) @ w2.T
    torch.testing.assert_close(ffn(x).double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(poly_norm_mul_reference(xd @ w1.T, xd @ w3.T, ffn.poly_norm.weight,
                                                       ffn.poly_norm.bias, EPS) @ w2.T, want, rtol=1e-12, atol=1e-12)
