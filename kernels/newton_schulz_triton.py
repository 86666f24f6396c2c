"""Symmetric products of a Newton-Schulz iteration in Triton: only the tiles on and below the diagonal are computed.

One Newton-Schulz iteration on a wide bf16 matrix X (m x n, m <= n) is

    A = X X^T                 symmetric, m x m       (2 m^2 n FLOPs as a general product)
    B = b A + c A A           symmetric, m x m       (2 m^3)
    X = a X + B X             general,   m x n       (2 m^2 n)

``sym_product(P, out=C, alpha, beta, D)`` computes C = alpha * P P^T (+ beta * D, D symmetric m x m) for any
strided P (m x k): a tile (i, j) of C is sum_k P[i-rows, k] P[j-rows, k], so both operands are row panels of P
(for P = A symmetric, P P^T = A A). Only tiles that reach the diagonal or below it compute (the others return at
once); every tile stores its elements on and below the diagonal and, transposed, its elements strictly below it
above the diagonal, so every element of C is written exactly once and C is exactly symmetric. That halves the FLOPs of the first two lines;
the third stays a general product (cuBLAS through ``torch.addmm``, which the caller uses).

Accumulation is fp32 and the epilogue (alpha * acc + beta * D, one rounding to C's dtype) matches cuBLAS's
``addmm`` epilogue, so the iteration equals the plain torch composition up to the order of the fp32 sums.
Launch tiles: BLOCK_M x BLOCK_N output tiles, K in steps of BLOCK_K, tile rows in bands of GROUP; on CUDA
the configuration is chosen once per shape by timing ``CONFIGS`` (``triton.autotune``); under
``TRITON_INTERPRET=1`` (CPU tests) ``INTERPRET_CONFIG`` is used directly.
"""

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); chosen per shape by timing on CUDA
CONFIGS = [
    (128, 128, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 128, 8, 3),
    (128, 256, 64, 8, 4),
    (64, 128, 64, 4, 4),
    (128, 64, 64, 4, 4),
]
GROUP_M = 8
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _sym_product_kernel(
    P, D, C, M, K,
    stride_pm, stride_pk, stride_dm, stride_dn, stride_cm, stride_cn,
    alpha, beta,
    HAS_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr = 8, UPCAST: tl.constexpr = False,
):
    # tiles in bands of GROUP tile rows (programs in flight share row and column panels in L2); a tile wholly
    # above the diagonal has nothing to compute and returns at once
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(M, BLOCK_N)
    ti, tj = tl.swizzle2d(tl.program_id(0) // tiles_n, tl.program_id(0) % tiles_n, tiles_m, tiles_n, GROUP)
    if tj * BLOCK_N > ti * BLOCK_M + BLOCK_M - 1:
        return
    rows = ti * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tj * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # out-of-range rows read row M - 1's neighbours modulo M (never stored): no masks in the main loop's M dim
    rows_in = rows % M
    cols_in = cols % M
    a_ptrs = P + rows_in[:, None].to(tl.int64) * stride_pm + ks[None, :].to(tl.int64) * stride_pk
    b_ptrs = P + ks[:, None].to(tl.int64) * stride_pk + cols_in[None, :].to(tl.int64) * stride_pm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=ks[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=ks[:, None] < k_left, other=0.0)
        if UPCAST:  # the interpreter's dot mishandles bf16 operands: exact products in fp32 instead
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_pk
        b_ptrs += BLOCK_K * stride_pk
    acc = acc * alpha
    in_bounds = (rows[:, None] < M) & (cols[None, :] < M)
    if HAS_D:
        d = tl.load(D + rows[:, None].to(tl.int64) * stride_dm + cols[None, :].to(tl.int64) * stride_dn,
                    mask=in_bounds, other=0.0)
        acc += beta * d.to(tl.float32)
    out = acc.to(C.dtype.element_ty)
    lower = rows[:, None] >= cols[None, :]
    tl.store(C + rows[:, None].to(tl.int64) * stride_cm + cols[None, :].to(tl.int64) * stride_cn, out,
             mask=in_bounds & lower)
    # the mirror: element (r, c), r > c, also lands at (c, r)
    strict_t = cols[:, None] < rows[None, :]
    mirror_in = (cols[:, None] < M) & (rows[None, :] < M)
    tl.store(C + cols[:, None].to(tl.int64) * stride_cm + rows[None, :].to(tl.int64) * stride_cn, tl.trans(out),
             mask=mirror_in & strict_t)


_tuned = triton.autotune(
    configs=[triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP=GROUP_M), num_warps=w, num_stages=s)
             for bm, bn, bk, w, s in CONFIGS],
    key=["M", "K", "stride_pm", "stride_pk", "HAS_D"],
)(_sym_product_kernel)


def _tiles(m: int, block_m: int, block_n: int) -> int:
    return triton.cdiv(m, block_m) * triton.cdiv(m, block_n)


def sym_product(p: Tensor, *, out: Tensor | None = None, alpha: float = 1.0, beta: float = 0.0,
                d: Tensor | None = None) -> Tensor:
    """C = alpha * p @ p.T + beta * d (d: symmetric m x m, optional), written as an exactly symmetric m x m
    matrix of p's dtype. ``p`` may be any strided 2-D view (a transposed matrix too)."""
    if p.ndim != 2:
        raise ValueError(f"sym_product needs a 2-D matrix, got shape {tuple(p.shape)}")
    m, k = p.shape
    if out is None:
        out = torch.empty(m, m, dtype=p.dtype, device=p.device)
    if out.shape != (m, m) or (d is not None and d.shape != (m, m)):
        raise ValueError(f"sym_product: out {tuple(out.shape)} and d must be {m} x {m}")
    if m == 0:
        return out
    dd = d if d is not None else out
    args = (p, dd, out, m, k, p.stride(0), p.stride(1), dd.stride(0), dd.stride(1), out.stride(0), out.stride(1),
            float(alpha), float(beta))
    if p.is_cuda and not _interpret():
        _tuned[lambda meta: (_tiles(m, meta["BLOCK_M"], meta["BLOCK_N"]),)](*args, HAS_D=d is not None)
    else:
        cfg = INTERPRET_CONFIG
        _sym_product_kernel[(_tiles(m, cfg["BLOCK_M"], cfg["BLOCK_N"]),)](*args, HAS_D=d is not None, UPCAST=True, **cfg)
    return out


def newton_schulz_symmetric(x: Tensor, coefficients, gram: Tensor | None = None,
                            update: Tensor | None = None) -> Tensor:
    """The Newton-Schulz iterations on a wide (rows <= cols) bf16 matrix ``x`` already scaled to norm <= 1:
    per iteration A = X X^T and B = b A + c A A through ``sym_product``, X = a X + B X through ``torch.addmm``."""
    m = x.shape[0]
    gram = torch.empty(m, m, dtype=x.dtype, device=x.device) if gram is None else gram
    update = torch.empty_like(gram) if update is None else update
    for a, b, c in coefficients:
        sym_product(x, out=gram)
        sym_product(gram, out=update, alpha=c, beta=b, d=gram)
        x = torch.addmm(x, update, x, beta=a)
    return x
