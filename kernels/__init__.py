"""PolyNorm compute kernels, importable as ``motif_titan.kernels``.

This directory is installed as the ``motif_titan.kernels`` subpackage (see ``pyproject.toml``), never as a
top-level module named ``kernels`` (that name belongs to another PyPI package).

Today it holds the plain PyTorch reference of PolyNorm and of PolyNorm followed by the FFN's elementwise
product (fp32 inside, one downcast at the end). The fused Triton kernels plug in behind the same functions.
"""

from .polynorm_reference import poly_norm_mul_reference, poly_norm_reference, polynorm_row_moments

__all__ = ["poly_norm_reference", "poly_norm_mul_reference", "polynorm_row_moments"]
