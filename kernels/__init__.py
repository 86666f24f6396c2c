"""Triton kernels, importable as ``motif_titan.kernels`` (never as a top-level module named ``kernels``:
that name belongs to another PyPI package; ``pyproject.toml`` installs this directory under motif_titan).

- ``poly_norm`` / ``poly_norm_mul``: the public, autograd-capable functions (backend "auto" | "triton" | "torch").
- ``polynorm_triton``: the fused Triton forward and backward kernels behind them.
- ``polynorm_reference``: the plain PyTorch reference (fp32 inside) every kernel is checked against.
Benchmark: ``benchmarks/polynorm.py`` at the top of the repo; results in ``benchmarks/RESULTS.md``.
"""

from .polynorm import BACKENDS, poly_norm, poly_norm_mul
from .polynorm_reference import (
    poly_norm_from_moments,
    poly_norm_mul_reference,
    poly_norm_reference,
    polynorm_row_moments,
    upcast,
)

__all__ = [
    "BACKENDS",
    "poly_norm",
    "poly_norm_mul",
    "poly_norm_reference",
    "poly_norm_mul_reference",
    "polynorm_row_moments",
    "poly_norm_from_moments",
    "upcast",
]
