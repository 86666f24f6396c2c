"""PolyNorm written out in float64 from its definition: the independent reference of the PolyNorm tests (the
package's own reference, kernels/polynorm_reference.py, is one of the implementations under test)."""

import torch

EPS = 1e-6


def polynorm_formula(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """w0 * norm(x^3) + w1 * norm(x^2) + w2 * norm(x) + b, norm(z) = z / sqrt(mean(z^2) + eps), float64."""
    x, w, b = x.double(), w.double(), b.double()

    def norm(z):
        return z / torch.sqrt((z * z).mean(-1, keepdim=True) + eps)

    return w[0] * norm(x ** 3) + w[1] * norm(x ** 2) + w[2] * norm(x) + b
