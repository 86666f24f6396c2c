"""The symmetric-product Newton-Schulz kernel (Triton; through TRITON_INTERPRET=1 on CPU) against float64 and
against the plain torch iteration. Tiny shapes: the interpreter runs every tile in numpy."""

import pytest
import torch

from motif_titan.kernels import newton_schulz_triton as nst
from motif_titan.kernels.newton_schulz_triton import sym_product
from motif_titan.optim.newton_schulz import iteration_coefficients, zeropower_via_newton_schulz

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
cuda_only = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")


@pytest.fixture(autouse=True)
def _two_configs_on_cuda(monkeypatch):
    """On a GPU the autotuners time two configurations, not all (compiling 12 per tiny test shape is slow); the
    benchmark checks every configuration on the real shapes."""
    if DEVICE == "cuda":
        monkeypatch.setattr(nst._tuned, "configs", nst._configs([(128, 128, 64, 4, 3), (64, 128, 64, 4, 3)]))
        monkeypatch.setattr(nst._tuned_update, "configs", nst._configs([(128, 128, 64, 4, 3), (64, 128, 64, 4, 3)]))


def _rand(shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE)


@pytest.mark.parametrize("tiles", [(16, 32), (32, 16), (16, 16)], ids=["wide-tiles", "tall-tiles", "square-tiles"])
@pytest.mark.parametrize("shape,transposed", [((37, 50), False), ((40, 23), True), ((16, 16), False)],
                         ids=["37x50", "transposed-view", "one-tile"])
def test_sym_product_matches_float64_and_is_exactly_symmetric(monkeypatch, shape, transposed, tiles):
    # tiles wholly below the diagonal, square tiles on it and rectangular tiles across it store differently
    monkeypatch.setattr(nst, "INTERPRET_CONFIG", dict(BLOCK_M=tiles[0], BLOCK_N=tiles[1], BLOCK_K=16))
    p = _rand(shape[::-1] if transposed else shape, seed=sum(shape))
    p = p.T if transposed else p
    m = p.shape[0]
    d = _rand((m, m), seed=7)
    d = d + d.T
    for alpha, beta, dd in ((1.0, 0.0, None), (-0.7, 1.3, d)):
        out = torch.full((m, m), float("nan"), device=DEVICE)  # every element must be written
        sym_product(p, out=out, alpha=alpha, beta=beta, d=dd)
        ref = alpha * (p.double() @ p.double().T) + (beta * dd.double() if dd is not None else 0.0)
        assert torch.isfinite(out).all()
        assert torch.equal(out, out.T)
        err = (out.double() - ref).abs().max().item() / ref.abs().max().item()
        assert err < 2e-5 if DEVICE == "cpu" else err < 5e-3  # fp32 in the interpreter; tf32 on a GPU


def test_scaled_rounds_like_an_ieee_fp32_division():
    x = _rand((24, 40), seed=3, dtype=torch.bfloat16)
    norm = x.norm().clamp(min=1e-7)
    for view in (x, x.T):  # a transposed view is written transposed: the result is row-major either way
        got = nst.scaled(view, norm, use_kernel=True)
        # float64 quotient rounded to fp32 is the correctly rounded fp32 quotient (53 >= 2 * 24 + 2 bits)
        want = (view.double() / norm.double()).float()
        assert got.shape == view.shape and got.is_contiguous()
        if DEVICE == "cuda":  # round to nearest even, as torch's CUDA division does
            assert torch.equal(got, want.bfloat16())
        else:  # the interpreter truncates fp32 to bf16: within one bf16 ulp
            assert ((got.float() - want).abs() <= want.abs() * 2.0 ** -7).all()


def _newton_schulz_float64(g, coefficients):
    x = g.double()
    transposed = x.shape[0] > x.shape[1]
    x = x.T if transposed else x
    x = x / x.norm()
    for a, b, c in coefficients:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("coefficients", ["keller", "motif"])
def test_triton_iteration_equals_torch_path_within_bf16_rounding(coefficients):
    for shape in ((24, 40), (48, 20)):
        g = _rand(shape, seed=shape[0])
        # one iteration: the two paths round to bf16 at the same points, so they differ by under one bf16 ulp
        one = iteration_coefficients(coefficients, 1)
        got = zeropower_via_newton_schulz(g, one, backend="triton")
        want = zeropower_via_newton_schulz(g, one, backend="torch")
        assert got.shape == want.shape == shape and got.dtype == want.dtype == torch.bfloat16
        assert _rel(got, want) < 2.0 ** -8
        # five iterations amplify rounding (the polynomial's slope at 0 is a = 3.4 or more): both paths stay as
        # near the exact float64 iteration as bf16 allows, and near-orthogonal
        five = iteration_coefficients(coefficients, 5)
        exact = _newton_schulz_float64(g, five)
        got = zeropower_via_newton_schulz(g, five, backend="triton")
        want = zeropower_via_newton_schulz(g, five, backend="torch")
        assert _rel(want, exact) < 0.05 and _rel(got, exact) < 0.05
        x = got.double() if shape[0] <= shape[1] else got.double().T
        sv = torch.linalg.svdvals(x)
        assert 0.5 < sv.min().item() and sv.max().item() < 1.3


@pytest.mark.parametrize("tiles", [(16, 32), (32, 16)], ids=["wide-tiles", "tall-tiles"])
def test_update_product_matches_float64(monkeypatch, tiles):
    monkeypatch.setattr(nst, "INTERPRET_CONFIG", dict(BLOCK_M=tiles[0], BLOCK_N=tiles[1], BLOCK_K=16))
    x = _rand((37, 70), seed=11)
    b = _rand((37, 37), seed=12)
    b = b + b.T
    got = nst.update_product(b, x, -1.7)
    ref = -1.7 * x.double() + b.double() @ x.double()
    assert got.shape == x.shape and torch.isfinite(got).all()
    err = (got.double() - ref).abs().max().item() / ref.abs().max().item()
    assert err < 2e-5 if DEVICE == "cpu" else err < 5e-3


def test_third_product_modes_agree_within_bf16_rounding():
    x = _rand((24, 40), seed=13, dtype=torch.bfloat16)
    b = _rand((24, 24), seed=14, dtype=torch.bfloat16) / 8
    b = b + b.T
    cublas = nst.third_product(b, x, 3.4, "cublas")
    assert torch.equal(cublas, torch.addmm(x, b, x, beta=3.4))
    ours = nst.third_product(b, x, 3.4, "triton")
    assert _rel(ours, cublas) < (2.0 ** -8 if DEVICE == "cuda" else 2.0 ** -7)  # the interpreter truncates to bf16
    with pytest.raises(ValueError, match="mode = 'fast'"):
        nst.third_product(b, x, 3.4, "fast")


def test_backend_choice():
    g = _rand((8, 8), seed=1)
    with pytest.raises(ValueError, match="backend = 'cuda'"):
        zeropower_via_newton_schulz(g, iteration_coefficients("keller", 1), backend="cuda")
    if DEVICE == "cpu":  # auto keeps the torch path on CPU, bit for bit
        coeffs = iteration_coefficients("keller", 2)
        assert torch.equal(zeropower_via_newton_schulz(g, coeffs), zeropower_via_newton_schulz(g, coeffs,
                                                                                               backend="torch"))


def test_sym_product_of_commuting_matrices_with_a_diagonal(monkeypatch):
    # the Gram iteration's products: p @ other.T for two polynomials in the same symmetric matrix, + diag * I
    monkeypatch.setattr(nst, "INTERPRET_CONFIG", dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16))
    s = _rand((37, 37), seed=5) / 8
    s = s + s.T
    p, q = 1.5 * s + s @ s, -0.5 * s + 0.25 * s @ s @ s
    out = sym_product(p, other=q, alpha=0.7, beta=-1.1, d=s, diag=2.5)
    ref = 0.7 * p.double() @ q.double() - 1.1 * s.double() + 2.5 * torch.eye(37, dtype=torch.float64, device=DEVICE)
    assert torch.equal(out, out.T)
    err = (out.double() - ref).abs().max().item() / ref.abs().max().item()
    assert err < 2e-5 if DEVICE == "cpu" else err < 5e-3


@pytest.mark.parametrize("restarts", [(2,), ()], ids=["restart-after-2", "no-restart"])
def test_gram_iteration_is_as_near_the_exact_iteration_as_the_plain_path(restarts):
    g = _rand((24, 56), seed=9)
    five = iteration_coefficients("keller", 5)
    exact = _newton_schulz_float64(g, five)
    x = nst.scaled(g.bfloat16(), g.bfloat16().norm())
    got = nst.newton_schulz_gram(x, five, restarts=restarts)
    plain = zeropower_via_newton_schulz(g, five, backend="torch")
    assert got.shape == g.shape and got.dtype == torch.bfloat16
    assert _rel(got, exact) < 0.05 and _rel(got, plain) < 0.05
    # through the public entry point, transposed: the same values
    assert torch.equal(nst.newton_schulz_triton(g.T, five, gram=True).T, nst.newton_schulz_triton(g, five, gram=True))


@cuda_only
@pytest.mark.parametrize("gram", [False, True], ids=["symmetric", "gram"])
def test_cuda_graph_replay_equals_the_eager_path(monkeypatch, gram):
    coeffs = iteration_coefficients("keller", 5)
    inputs = [_rand((640, 256), seed=s) for s in range(4)]
    monkeypatch.setattr(nst, "CUDA_GRAPHS", False)
    eager = [nst.newton_schulz_triton(g, coeffs, gram=gram) for g in inputs]
    monkeypatch.setattr(nst, "CUDA_GRAPHS", True)
    nst.clear_cuda_graphs()
    graphed = [nst.newton_schulz_triton(g, coeffs, gram=gram) for g in inputs]  # eager, capture, replays
    assert len(nst._graphs) == 1 and not isinstance(next(iter(nst._graphs.values())), str)
    for got, want in zip(graphed, eager):  # every result kept: none overwritten by a later replay
        assert torch.equal(got, want)
    # inside a caller's own capture the eager kernels are captured instead
    static = inputs[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = nst.newton_schulz_triton(static, coeffs, gram=gram)
    static.copy_(inputs[1])
    graph.replay()
    assert torch.equal(out, eager[1])
    nst.clear_cuda_graphs()
