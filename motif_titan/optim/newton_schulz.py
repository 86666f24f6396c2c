"""Newton-Schulz orthogonalization, the math at the heart of Muon, for one matrix on one device.

Numerics follow ``torch.optim.Muon`` (PyTorch >= 2.9): the matrix is cast to bf16, transposed so that it is wide
(rows <= cols), scaled to Frobenius norm <= 1, then each iteration computes A = X X^T, B = b A + c A A,
X = a X + B X, and the result is transposed back. Three coefficient sets:

- ``"keller"``: (3.4445, -4.7750, 2.0315) at every iteration, torch.optim.Muon's default.
- ``"motif"``: Motif's per-iteration table (five (a, b, c) triples), from Motif's own optimizer.
- ``"polar_express"``: the five-iteration Polar Express schedule (Amsel et al., arXiv:2505.16932) as modded-nanogpt
  publishes it, here on the same Frobenius scaling as the other two (modded-nanogpt divides by 1.02 x the norm);
  past five iterations its last triple repeats.

The default is "keller": it is what torch.optim.Muon (this project's reference) does, and every distributed mode
is tested against that reference; "motif" is one config value away for runs that want Motif's exact table.

Two implementations of the same iteration (``backend``): "torch" (three torch matmuls per iteration, any device)
and "triton" (``motif_titan.kernels.newton_schulz_triton``: the two symmetric products X X^T and b A + c A A
computed on one triangle of tiles and mirrored, the third product through ``torch.addmm``; optionally replayed
from a CUDA graph per shape). "auto" takes the Triton one for CUDA matrices whose short side is at least
``TRITON_MIN_DIM`` (measured faster there on an H200: ``benchmarks/newton_schulz.py``, ``benchmarks/RESULTS.md``),
the torch one elsewhere. Both accumulate in fp32 and round to bf16 at the same points, so they agree to bf16 rounding (the sums
run in different orders; on the H200 they came out bit-identical).

"gram" is "auto" with the Gram Newton-Schulz iteration (``newton_schulz_triton(..., gram=True)``: iterate on the
m x m Gram matrix, one product with the m x n matrix per restart) for Triton matrices at least ``GRAM_MIN_ASPECT``
times wider than tall: fewer FLOPs, another rounding (its measured distance from the plain path is in
``benchmarks/RESULTS.md``). ``AUTO_GRAM = True`` makes "auto" behave as "gram".
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from motif_titan.config_checks import refuse

BACKENDS = ("auto", "torch", "triton", "gram")
# "auto" uses the Triton kernels on CUDA when min(rows, cols) >= this
TRITON_MIN_DIM = 4096
# "gram" (and "auto" when AUTO_GRAM) uses the Gram iteration there when max(rows, cols) >= this x min(rows, cols)
GRAM_MIN_ASPECT = 2.0
AUTO_GRAM = False

EPS = 1e-7
KELLER = ((3.4445, -4.7750, 2.0315),)
MOTIF = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
COEFFICIENT_SETS = {"keller": KELLER, "motif": MOTIF, "polar_express": POLAR_EXPRESS}


def check_ns_coefficients(name: str) -> None:
    if name not in COEFFICIENT_SETS:
        refuse("optimizer.ns_coefficients", name, sorted(COEFFICIENT_SETS))


def iteration_coefficients(name: str, ns_steps: int) -> list[tuple[float, float, float]]:
    """(a, b, c) for each of ``ns_steps`` iterations; a table shorter than ns_steps repeats its last entry."""
    check_ns_coefficients(name)
    table = COEFFICIENT_SETS[name]
    return [table[min(i, len(table) - 1)] for i in range(ns_steps)]


def _path(grad: Tensor, backend: str) -> str:
    """"torch", "triton" or "gram" for this matrix."""
    if backend not in BACKENDS:
        raise ValueError(f"Newton-Schulz backend = {backend!r}; allowed: {BACKENDS}")
    if backend == "auto" and AUTO_GRAM:
        backend = "gram"
    if backend in ("auto", "gram"):
        if not (grad.is_cuda and min(grad.shape) >= TRITON_MIN_DIM):
            return "torch"
        return "gram" if backend == "gram" and max(grad.shape) >= GRAM_MIN_ASPECT * min(grad.shape) else "triton"
    return backend


def zeropower_via_newton_schulz(
    grad: Tensor, coefficients: Sequence[tuple[float, float, float]], eps: float = EPS, backend: str = "auto"
) -> Tensor:
    """Approximately orthogonalize a 2-D matrix (U S V^T -> U S' V^T with S' near 1), in bf16."""
    if grad.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(grad.shape)}")
    path = _path(grad, backend)
    if path != "torch":
        from motif_titan.kernels.newton_schulz_triton import newton_schulz_triton

        return newton_schulz_triton(grad, coefficients, eps, gram=path == "gram")
    x = grad.bfloat16()
    transposed = grad.size(0) > grad.size(1)
    if transposed:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for a, b, c in coefficients:
        gram = x @ x.T
        update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, update, x, beta=a)
    return x.T if transposed else x


def newton_schulz_flops(rows: int, cols: int, ns_steps: int) -> int:
    """FLOPs of ``ns_steps`` iterations on a rows x cols matrix: with m = min, n = max, one iteration costs
    2 m^2 n (X X^T) + 2 m^3 (A A) + 2 m^2 n (B X) = 4 m^2 n + 2 m^3."""
    m, n = min(rows, cols), max(rows, cols)
    return ns_steps * (4 * m * m * n + 2 * m ** 3)
