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

The same kernel with a second operand Q (tile (i, j) = sum_k P[i, k] Q[j, k]) and an optional ``diag`` added to the
diagonal serves the Gram iteration (``newton_schulz_gram``), whose m x m products are all symmetric: R = X X^T,
Z = a I + b R + c R R, and products of two polynomials in the same R (Z Q, Z R), which commute.

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
under ``TRITON_INTERPRET=1`` (CPU tests) ``INTERPRET_CONFIG`` is used directly. With ``CUDA_GRAPHS`` on, the
iterations are replayed from a CUDA graph from a shape's second call on (same kernels, same values).
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
    P, Q, D, C, M, K,
    stride_pm, stride_pk, stride_qm, stride_qk, stride_dm, stride_dn, stride_cm, stride_cn,
    alpha, beta, gamma,
    HAS_D: tl.constexpr, HAS_DIAG: tl.constexpr, TWO_OPERANDS: tl.constexpr, INDEX_64: tl.constexpr,
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
    if TWO_OPERANDS:  # (a separate specialization: reading both panels through P alone is ~10% faster on an H200)
        b_ptrs = Q + ks[:, None] * stride_qk + (cols % M)[None, :] * stride_qm
    else:
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
        if TWO_OPERANDS:
            b_ptrs += BLOCK_K * stride_qk
        else:
            b_ptrs += BLOCK_K * stride_pk
    acc = acc * alpha
    in_bounds = (rows[:, None] < M) & (cols[None, :] < M)
    if HAS_D:
        d = tl.load(D + rows[:, None] * stride_dm + cols[None, :] * stride_dn, mask=in_bounds, other=0.0)
        acc += beta * d.to(tl.float32)
    if HAS_DIAG:
        acc += tl.where(rows[:, None] == cols[None, :], gamma, 0.0)
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


_tuned = triton.autotune(configs=_configs(CONFIGS),
                         key=["M", "K", "stride_pm", "stride_pk", "HAS_D", "HAS_DIAG", "TWO_OPERANDS"],
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


def sym_product(p: Tensor, *, other: Tensor | None = None, out: Tensor | None = None, alpha: float = 1.0,
                beta: float = 0.0, d: Tensor | None = None, diag: float | None = None,
                config: triton.Config | None = None) -> Tensor:
    """C = alpha * p @ other.T + beta * d + diag * I (``other`` defaults to p; d: symmetric m x m, optional),
    written as an exactly symmetric m x m matrix of ``out``'s dtype (default p's). Only the lower triangle of
    tiles is computed and mirrored, so ``other`` must make the product symmetric: p itself, or a symmetric matrix
    that commutes with a symmetric p (two polynomials in the same matrix: then p @ other.T = p @ other). ``p`` and
    ``other`` may be any strided 2-D views (a transposed matrix too). ``config`` (CUDA): launch with that
    configuration instead of the autotuned one."""
    if p.ndim != 2:
        raise ValueError(f"sym_product needs a 2-D matrix, got shape {tuple(p.shape)}")
    m, k = p.shape
    q = p if other is None else other
    if q.shape != p.shape:
        raise ValueError(f"sym_product: other {tuple(q.shape)} must have p's shape {tuple(p.shape)}")
    if out is None:
        out = torch.empty(m, m, dtype=p.dtype, device=p.device)
    if out.shape != (m, m) or (d is not None and d.shape != (m, m)):
        raise ValueError(f"sym_product: out {tuple(out.shape)} and d must be {m} x {m}")
    if m == 0:
        return out
    if k == 0:
        out.copy_(beta * d if d is not None else torch.zeros_like(out))
        if diag:
            out.diagonal().add_(diag)
        return out
    dd = d if d is not None else out
    args = (p, q, dd, out, m, k, p.stride(0), p.stride(1), q.stride(0), q.stride(1), dd.stride(0), dd.stride(1),
            out.stride(0), out.stride(1), float(alpha), float(beta), float(diag or 0.0))
    flags = dict(HAS_D=d is not None, HAS_DIAG=bool(diag), TWO_OPERANDS=q is not p,
                 INDEX_64=_index_64(p.numel(), q.numel(), out.numel(),
                                    max(abs(t.stride(0)) * m + abs(t.stride(1)) * k for t in (p, q))))
    if p.is_cuda and not _interpret():
        key = ("sym", m, k, p.stride(), q.stride(), dd.stride(), out.stride(), d is not None, bool(diag), q is p,
               p.dtype, q.dtype, out.dtype, p.device)
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


def scaled(x: Tensor, norm: Tensor, use_kernel: bool | None = None, out: Tensor | None = None) -> Tensor:
    """x / norm (norm: a one-element tensor) as a row-major matrix of x's dtype (new, or ``out``), rounded like
    torch's CUDA division (fp32 IEEE quotient, one rounding), in one pass whatever x's layout: a transposed view is
    written transposed. ``use_kernel`` (default: on CUDA): off, ``(x / norm).contiguous()`` (on CPU torch
    multiplies by the reciprocal for bf16 instead of dividing)."""
    if use_kernel is None:
        use_kernel = x.is_cuda and not _interpret()
    if not use_kernel or x.ndim != 2:
        y = (x / norm).contiguous()
        return y if out is None else out.copy_(y)
    r, s = x.shape
    y = torch.empty(r, s, dtype=x.dtype, device=x.device) if out is None else out
    if y.numel():
        block_r, block_s = 64, 64
        _scale_kernel[(triton.cdiv(r, block_r), triton.cdiv(s, block_s))](
            x, y, norm, r, s, x.stride(0), x.stride(1), y.stride(0), y.stride(1), BLOCK_R=block_r, BLOCK_S=block_s,
            num_warps=4)
    return y


# ---- the iterations. Each path stops one product short of the result and returns (left, right, a): the result
# is a * right + left @ right (left @ right where a is None), computed by ``_finish`` as a new tensor (so a CUDA
# graph of the path can keep its buffers while the caller keeps every result).

def _symmetric_iterations(x: Tensor, coefficients, third: str | None = None):
    m = x.shape[0]
    gram = torch.empty(m, m, dtype=x.dtype, device=x.device)
    update = torch.empty_like(gram)
    for i, (a, b, c) in enumerate(coefficients):
        sym_product(x, out=gram)
        sym_product(gram, out=update, alpha=c, beta=b, d=gram)
        if i == len(coefficients) - 1:
            return update, x, a
        x = third_product(update, x, a, third)
    return None, x, None  # no iterations


# the Gram path: restart (X = Q X, R = X X^T) after these iterations (counted from 1); the m x m matrices' dtype
GRAM_RESTARTS = (2,)
GRAM_DTYPE = torch.float16


def _gram_iterations(x: Tensor, coefficients, restarts=None, dtype=None):
    """Gram Newton-Schulz: with R = X X^T, one iteration is X <- Z X, Z = a I + b R + c R^2, so X_k = Q_k X_0 with
    Q_k = Z_k ... Z_1, and R <- Z R Z; every product but the last is m x m, symmetric, and (Z, Q, R being
    polynomials in the same R_0) computed on one triangle. The m x m matrices are kept in ``dtype`` (fp16: 3 more
    mantissa bits than bf16 where R's small eigenvalues need them), and the iteration restarts from X = Q X,
    R = X X^T after the iterations in ``restarts`` (the products drift from commuting as rounding accumulates)."""
    restarts = GRAM_RESTARTS if restarts is None else restarts
    dtype = GRAM_DTYPE if dtype is None else dtype
    m = x.shape[0]

    def new(dt=dtype):
        return torch.empty(m, m, dtype=dt, device=x.device)

    r = sym_product(x, out=new())
    q = None
    steps = len(coefficients)
    for i, (a, b, c) in enumerate(coefficients):
        last, restart = i == steps - 1, (i + 1) in restarts and i < steps - 1
        z = sym_product(r, out=new(), alpha=c, beta=b, d=r, diag=a)
        q = z if q is None else sym_product(z, other=q, out=new(x.dtype if last or restart else dtype))
        if last:
            break
        if restart:
            x = torch.mm(q.to(x.dtype), x)
            r, q = sym_product(x, out=new()), None
        else:
            r = sym_product(z, other=sym_product(z, other=r, out=new()), out=new())
    if q is None:
        return None, x, None
    return q.to(x.dtype), x, None


def _finish(left, right, a, third: str | None = None) -> Tensor:
    if left is None:
        return right.clone()
    if a is None:
        return torch.mm(left, right)
    return third_product(left, right, a, third)


def newton_schulz_symmetric(x: Tensor, coefficients, third: str | None = None) -> Tensor:
    """The Newton-Schulz iterations on a wide (rows <= cols) bf16 matrix ``x`` already scaled to norm <= 1:
    per iteration A = X X^T and B = b A + c A A through ``sym_product``, X = a X + B X through
    ``third_product`` (``third``: its mode). ``x`` itself is never written."""
    return _finish(*_symmetric_iterations(x, coefficients, third), third)


def newton_schulz_gram(x: Tensor, coefficients, restarts=None, dtype=None) -> Tensor:
    """The same through the Gram iteration (``_gram_iterations``): another rounding, not the plain path's bits."""
    return _finish(*_gram_iterations(x, coefficients, restarts, dtype))


# ---- CUDA graphs: per (shape, dtype, device, stream, coefficients, path), the iterations up to the last product
# captured once (on the second call of a key: the first one runs eagerly, autotuning included) and replayed. The
# cast, norm and scaling run eagerly into the graph's static input, the last product eagerly out of its static
# outputs into a new tensor. Under a stream capture already in progress (say, a caller's own CUDA graph) and where
# a capture fails, the eager path runs. Off by default: on an H200 the graphs gained nothing on the shapes "auto"
# sends here (the GPU is the bottleneck, not the launches: a layer's wall time equals its graph-replay time, and
# the graphed layer ran in 32.2-32.5 ms against 31.6-32.3 eager; benchmarks/RESULTS.md), while each graph keeps
# its shape's buffers allocated.
CUDA_GRAPHS = False
_graphs: dict = {}


class _Graphed:
    def __init__(self, x_static: Tensor, iterations):
        self.x = x_static
        stream = torch.cuda.Stream(device=x_static.device)
        stream.wait_stream(torch.cuda.current_stream(x_static.device))
        with torch.cuda.stream(stream):  # warm-up on the capture stream (cuBLAS's per-stream workspace)
            iterations(self.x)
        torch.cuda.current_stream(x_static.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
            self.outputs = iterations(self.x)

    def __call__(self):
        self.graph.replay()
        return self.outputs


def clear_cuda_graphs() -> None:
    """Drop every captured graph and its buffers."""
    _graphs.clear()


def _run(view: Tensor, norm: Tensor, iterations, key, third: str | None) -> Tensor:
    if (not CUDA_GRAPHS or not view.is_cuda or _interpret()
            or torch.cuda.is_current_stream_capturing()):
        return _finish(*iterations(scaled(view, norm)), third)
    key = key + (tuple(view.shape), view.dtype, view.device, torch.cuda.current_stream(view.device).stream_id)
    entry = _graphs.get(key)
    if entry is None:  # first call: eager (autotuning); the next one captures
        _graphs[key] = "seen"
        return _finish(*iterations(scaled(view, norm)), third)
    if entry == "seen":
        try:
            entry = _Graphed(torch.empty(view.shape, dtype=view.dtype, device=view.device), iterations)
        except Exception:  # capture impossible here: stay eager for this key
            entry = "eager"
        _graphs[key] = entry
    if entry == "eager":
        return _finish(*iterations(scaled(view, norm)), third)
    scaled(view, norm, out=entry.x)
    return _finish(*entry(), third)


def newton_schulz_triton(grad: Tensor, coefficients, eps: float = 1e-7, gram: bool = False) -> Tensor:
    """The whole orthogonalization of ``motif_titan.optim.newton_schulz.zeropower_via_newton_schulz`` on this
    path: bf16 cast, transposed to wide, scaled to Frobenius norm <= 1, the iterations (``gram``: the Gram
    iteration, another rounding), transposed back. With ``CUDA_GRAPHS`` on, replayed from a CUDA graph from a
    shape's second call on; the values are the eager path's either way."""
    x = grad.bfloat16()
    transposed = grad.size(0) > grad.size(1)
    view = x.T if transposed else x
    norm = view.norm().clamp(min=eps)  # the norm of the same view as the torch path
    coefficients = tuple(tuple(float(v) for v in abc) for abc in coefficients)
    third = THIRD_PRODUCT
    if gram:
        restarts, dtype = tuple(GRAM_RESTARTS), GRAM_DTYPE

        def iterations(x):
            return _gram_iterations(x, coefficients, restarts, dtype)
        key = ("gram", coefficients, restarts, dtype)
    else:
        def iterations(x):
            return _symmetric_iterations(x, coefficients, third)
        key = ("symmetric", coefficients, third)
    out = _run(view, norm, iterations, key, third)
    return out.T if transposed else out
