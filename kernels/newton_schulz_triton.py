"""Newton-Schulz iteration in Triton: the two symmetric products computed on one triangle of tiles.

One Newton-Schulz iteration on a wide bf16 matrix X (m x n, m <= n) is

    A = X X^T                 symmetric, m x m       (2 m^2 n FLOPs as a general product)
    B = b A + c A A           symmetric, m x m       (2 m^3)
    X = a X + B X             general,   m x n       (2 m^2 n)

``sym_product(P, out=C, alpha, beta, D)`` computes C = alpha * P P^T (+ beta * D, D symmetric m x m) for any
strided P (m x k): a tile (i, j) of C is sum_k P[i-rows, k] P[j-rows, k], so both operands are row panels of P
(for P = A symmetric, P P^T = A A). Only tiles that reach the diagonal or below it compute (the others return at
once), which halves the FLOPs of the first two lines. A tile wholly below the diagonal stores itself and its
transpose with bounds masks only (vectorized stores); a square tile on the diagonal stores its lower part
reflected into its upper part; a rectangular tile crossing the diagonal masks element by element. So every
element of C is written once and C is exactly symmetric.

``update_product(B, X, a)`` is the third line in one kernel (a X read in the epilogue), an alternative to
``torch.addmm(X, B, X, beta=a)``, which first copies X into its output; ``THIRD_PRODUCT`` says which one runs.
The default is cuBLAS: on an H200 the two take the same time over a 12.7B layer, and only cuBLAS keeps the whole
iteration bit-identical to the torch path (``benchmarks/RESULTS.md``).

``newton_schulz_triton(grad, coefficients)`` is the whole orthogonalization: bf16 cast, Frobenius scaling (one
pass that also writes a tall gradient's transpose row-major, instead of a broadcast division and later a
transposing copy), the iterations, transposed back. Accumulation is fp32, k in order, and every epilogue rounds
once where cuBLAS and torch round (alpha * acc + beta * D; a X + acc; x / |x| as an IEEE fp32 division), so
the values equal the plain torch composition's except where fp32 sums in another order round to another bf16
value. Launch tiles: BLOCK_M x BLOCK_N output tiles, K in steps of BLOCK_K, tile rows in bands of GROUP; on
CUDA the configuration is chosen once per shape by timing ``CONFIGS`` / ``UPDATE_CONFIGS`` (``triton.autotune``);
under ``TRITON_INTERPRET=1`` (CPU tests) ``INTERPRET_CONFIG`` is used directly.
"""

import os

import torch
import triton
import triton.language as tl
import triton.testing
from torch import Tensor

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); chosen per shape by timing on CUDA. For m = 4096, 128 x 128
# tiles make 528 lower-triangle tiles (4 waves on 132 SMs), 64 x 128 / 128 x 64 make 1056 (8 waves).
CONFIGS = [
    (128, 128, 64, 4, 3), (128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 64, 8, 5),
    (128, 128, 128, 4, 3), (128, 128, 128, 8, 3), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3), (64, 64, 64, 4, 3),
    (64, 64, 64, 4, 4), (128, 256, 64, 8, 3),
]
# the same for the third line's general product (m x m times m x n)
UPDATE_CONFIGS = [
    (128, 128, 64, 4, 3), (128, 128, 64, 4, 4), (128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4),
    (256, 128, 64, 8, 3), (128, 128, 128, 4, 3), (128, 128, 128, 8, 3), (64, 128, 64, 4, 3),
]
GROUP_M = 8
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16)
# the third line: "cublas" (torch.addmm) or "triton" (update_product)
THIRD_PRODUCT = "cublas"
_INT32_MAX = 2 ** 31 - 1


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _sym_product_kernel(
    P, D, C, M, K,
    stride_pm, stride_pk, stride_dm, stride_dn, stride_cm, stride_cn,
    alpha, beta,
    HAS_D: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr = 8, UPCAST: tl.constexpr = False,
):
    # tiles in bands of GROUP tile rows (programs in flight share row and column panels in L2); a tile wholly
    # above the diagonal has nothing to compute and returns at once
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(M, BLOCK_N)
    ti, tj = tl.swizzle2d(tl.program_id(0) // tiles_n, tl.program_id(0) % tiles_n, tiles_m, tiles_n, GROUP)
    m0 = ti * BLOCK_M
    n0 = tj * BLOCK_N
    if n0 > m0 + BLOCK_M - 1:
        return
    rows = m0 + tl.arange(0, BLOCK_M)
    cols = n0 + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    if INDEX_64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    # out-of-range rows read row M - 1's neighbours modulo M (never stored): no masks in the M dimension
    a_ptrs = P + (rows % M)[:, None] * stride_pm + ks[None, :] * stride_pk
    b_ptrs = P + ks[:, None] * stride_pk + (cols % M)[None, :] * stride_pm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_K)):
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
        d = tl.load(D + rows[:, None] * stride_dm + cols[None, :] * stride_dn, mask=in_bounds, other=0.0)
        acc += beta * d.to(tl.float32)
    out = acc.to(C.dtype.element_ty)
    c_ptrs = C + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    ct_ptrs = C + cols[:, None] * stride_cm + rows[None, :] * stride_cn
    mirror_in = (cols[:, None] < M) & (rows[None, :] < M)
    if n0 + BLOCK_N <= m0:
        # wholly below the diagonal: the tile and its mirror, masked by the bounds only (vectorized stores)
        tl.store(c_ptrs, out, mask=in_bounds)
        tl.store(ct_ptrs, tl.trans(out), mask=mirror_in)
    elif BLOCK_M == BLOCK_N:
        # a square tile on the diagonal is its own mirror: its lower part reflected into the upper, stored once
        tl.store(c_ptrs, tl.where(rows[:, None] >= cols[None, :], out, tl.trans(out)), mask=in_bounds)
    else:
        # a rectangular tile crossing the diagonal: elements on and below it, the mirror of those strictly below
        tl.store(c_ptrs, out, mask=in_bounds & (rows[:, None] >= cols[None, :]))
        tl.store(ct_ptrs, tl.trans(out), mask=mirror_in & (cols[:, None] < rows[None, :]))


@triton.jit
def _update_kernel(B, X, Y, M, N, stride_bm, stride_bk, stride_xm, stride_xn, stride_ym, stride_yn, a,
                   INDEX_64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP: tl.constexpr = 8, UPCAST: tl.constexpr = False):
    """Y = a X + B X (B m x m, X and Y m x n): the third line, its a X term read in the epilogue."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    ti, tj = tl.swizzle2d(tl.program_id(0) // tiles_n, tl.program_id(0) % tiles_n, tiles_m, tiles_n, GROUP)
    rows = ti * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tj * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    if INDEX_64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    b_ptrs = B + (rows % M)[:, None] * stride_bm + ks[None, :] * stride_bk
    x_ptrs = X + ks[:, None] * stride_xm + (cols % N)[None, :] * stride_xn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(M, BLOCK_K)):
        k_left = M - k * BLOCK_K
        b = tl.load(b_ptrs, mask=ks[None, :] < k_left, other=0.0)
        x = tl.load(x_ptrs, mask=ks[:, None] < k_left, other=0.0)
        if UPCAST:
            b = b.to(tl.float32)
            x = x.to(tl.float32)
        acc = tl.dot(b, x, acc)
        b_ptrs += BLOCK_K * stride_bk
        x_ptrs += BLOCK_K * stride_xm
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    x0 = tl.load(X + rows[:, None] * stride_xm + cols[None, :] * stride_xn, mask=mask, other=0.0)
    y = acc + a * x0.to(tl.float32)
    tl.store(Y + rows[:, None] * stride_ym + cols[None, :] * stride_yn, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _scale_kernel(X, Y, NORM, R, S, stride_xr, stride_xs, stride_yr, stride_ys,
                  BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Y = X / NORM[0] for an R x S matrix (fp32 IEEE division, one rounding to Y's dtype); X and Y may have
    different layouts (a transposing copy)."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    s = tl.program_id(1).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (r[:, None] < R) & (s[None, :] < S)
    x = tl.load(X + r[:, None] * stride_xr + s[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
    n = tl.load(NORM).to(tl.float32)
    tl.store(Y + r[:, None] * stride_yr + s[None, :] * stride_ys, tl.math.div_rn(x, n).to(Y.dtype.element_ty),
             mask=mask)


def _bench(fn, quantiles):
    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


def _configs(table):
    return [triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP=GROUP_M), num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in table]


_tuned = triton.autotune(configs=_configs(CONFIGS), key=["M", "K", "stride_pm", "stride_pk", "HAS_D"],
                         do_bench=_bench)(_sym_product_kernel)
_tuned_update = triton.autotune(configs=_configs(UPDATE_CONFIGS), key=["M", "N", "stride_xm", "stride_xn"],
                                do_bench=_bench)(_update_kernel)
# the configuration the autotuner picked, per launch signature: later launches skip the autotuner's bookkeeping
_picked: dict = {}


def _launch(kernel, tuned, key, grid, args, flags, config):
    if config is None:
        config = _picked.get(key)
        if config is None:
            tuned[lambda meta: (grid(meta["BLOCK_M"], meta["BLOCK_N"]),)](*args, **flags)
            _picked[key] = tuned.best_config
            return
    kernel[(grid(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]),)](*args, **flags, **config.all_kwargs())


def _index_64(*extents) -> bool:
    return max(extents) > _INT32_MAX


def sym_product(p: Tensor, *, out: Tensor | None = None, alpha: float = 1.0, beta: float = 0.0,
                d: Tensor | None = None, config: triton.Config | None = None) -> Tensor:
    """C = alpha * p @ p.T + beta * d (d: symmetric m x m, optional), written as an exactly symmetric m x m
    matrix of p's dtype. ``p`` may be any strided 2-D view (a transposed matrix too). ``config`` (CUDA): launch
    with that configuration instead of the autotuned one."""
    if p.ndim != 2:
        raise ValueError(f"sym_product needs a 2-D matrix, got shape {tuple(p.shape)}")
    m, k = p.shape
    if out is None:
        out = torch.empty(m, m, dtype=p.dtype, device=p.device)
    if out.shape != (m, m) or (d is not None and d.shape != (m, m)):
        raise ValueError(f"sym_product: out {tuple(out.shape)} and d must be {m} x {m}")
    if m == 0:
        return out
    if k == 0:
        return out.copy_(beta * d if d is not None else torch.zeros_like(out))
    dd = d if d is not None else out
    args = (p, dd, out, m, k, p.stride(0), p.stride(1), dd.stride(0), dd.stride(1), out.stride(0), out.stride(1),
            float(alpha), float(beta))
    flags = dict(HAS_D=d is not None,
                 INDEX_64=_index_64(p.numel(), out.numel(), abs(p.stride(0)) * m + abs(p.stride(1)) * k))
    if p.is_cuda and not _interpret():
        key = ("sym", m, k, p.stride(), dd.stride(), out.stride(), d is not None, p.dtype, out.dtype, p.device)
        _launch(_sym_product_kernel, _tuned, key, lambda bm, bn: _tiles(m, bm, bn), args, flags, config)
    else:
        cfg = INTERPRET_CONFIG
        _sym_product_kernel[(_tiles(m, cfg["BLOCK_M"], cfg["BLOCK_N"]),)](*args, **flags, UPCAST=True, **cfg)
    return out


def update_product(b: Tensor, x: Tensor, a: float, *, out: Tensor | None = None,
                   config: triton.Config | None = None) -> Tensor:
    """a * x + b @ x (b: m x m, x: m x n) in one kernel, as a new tensor (or ``out``, not x) of x's dtype."""
    m, n = x.shape
    if b.shape != (m, m):
        raise ValueError(f"update_product: b must be {m} x {m}, got {tuple(b.shape)}")
    out = torch.empty(m, n, dtype=x.dtype, device=x.device) if out is None else out
    if m == 0 or n == 0:
        return out
    args = (b, x, out, m, n, b.stride(0), b.stride(1), x.stride(0), x.stride(1), out.stride(0), out.stride(1),
            float(a))
    flags = dict(INDEX_64=_index_64(x.numel(), b.numel(), out.numel(),
                                    abs(x.stride(0)) * m + abs(x.stride(1)) * n))

    def grid(bm, bn):
        return triton.cdiv(m, bm) * triton.cdiv(n, bn)

    if x.is_cuda and not _interpret():
        key = ("update", m, n, b.stride(), x.stride(), out.stride(), x.dtype, x.device)
        _launch(_update_kernel, _tuned_update, key, grid, args, flags, config)
    else:
        cfg = INTERPRET_CONFIG
        _update_kernel[(grid(cfg["BLOCK_M"], cfg["BLOCK_N"]),)](*args, **flags, UPCAST=True, **cfg)
    return out


def third_product(update: Tensor, x: Tensor, a: float, mode: str | None = None) -> Tensor:
    """a * x + update @ x as a new tensor: ``torch.addmm`` ("cublas") or ``update_product`` ("triton");
    ``mode`` defaults to ``THIRD_PRODUCT``."""
    mode = THIRD_PRODUCT if mode is None else mode
    if mode == "triton":
        return update_product(update, x, a)
    if mode == "cublas":
        return torch.addmm(x, update, x, beta=a)
    raise ValueError(f"third_product: mode = {mode!r}; allowed: cublas, triton")


def _tiles(m: int, block_m: int, block_n: int) -> int:
    return triton.cdiv(m, block_m) * triton.cdiv(m, block_n)


def scaled(x: Tensor, norm: Tensor, use_kernel: bool | None = None) -> Tensor:
    """x / norm (norm: a one-element tensor) as a new row-major matrix of x's dtype, rounded like torch's CUDA
    division (fp32 IEEE quotient, one rounding), in one pass whatever x's layout: a transposed view is written
    transposed. ``use_kernel`` (default: on CUDA): off, ``(x / norm).contiguous()`` (on CPU torch multiplies by
    the reciprocal for bf16 instead of dividing)."""
    if use_kernel is None:
        use_kernel = x.is_cuda and not _interpret()
    if not use_kernel or x.ndim != 2:
        return (x / norm).contiguous()
    r, s = x.shape
    y = torch.empty(r, s, dtype=x.dtype, device=x.device)
    if y.numel():
        block_r, block_s = 64, 64
        _scale_kernel[(triton.cdiv(r, block_r), triton.cdiv(s, block_s))](
            x, y, norm, r, s, x.stride(0), x.stride(1), y.stride(0), y.stride(1), BLOCK_R=block_r, BLOCK_S=block_s,
            num_warps=4)
    return y


def newton_schulz_symmetric(x: Tensor, coefficients, third: str | None = None) -> Tensor:
    """The Newton-Schulz iterations on a wide (rows <= cols) bf16 matrix ``x`` already scaled to norm <= 1:
    per iteration A = X X^T and B = b A + c A A through ``sym_product``, X = a X + B X through
    ``third_product`` (``third``: its mode). ``x`` itself is never written."""
    m = x.shape[0]
    gram = torch.empty(m, m, dtype=x.dtype, device=x.device)
    update = torch.empty_like(gram)
    for a, b, c in coefficients:
        sym_product(x, out=gram)
        sym_product(gram, out=update, alpha=c, beta=b, d=gram)
        x = third_product(update, x, a, third)
    return x


def newton_schulz_triton(grad: Tensor, coefficients, eps: float = 1e-7) -> Tensor:
    """The whole orthogonalization of ``motif_titan.optim.newton_schulz.zeropower_via_newton_schulz`` on this
    path: bf16 cast, transposed to wide, scaled to Frobenius norm <= 1, the iterations, transposed back."""
    x = grad.bfloat16()
    transposed = grad.size(0) > grad.size(1)
    view = x.T if transposed else x
    x = scaled(view, view.norm().clamp(min=eps))  # row-major; the norm of the same view as the torch path
    x = newton_schulz_symmetric(x, coefficients)
    return x.T if transposed else x
