"""Fused PolyNorm and PolyNorm x mul in Triton: one read of each input row, one write of each output row.

Forward, per row of length N (fp32 inside):
    s_k = sum(x^(2k)) for k = 1, 2, 3;  r_k = rsqrt(s_k / N + eps)
    y   = w0 * r3 * x^3 + w1 * r2 * x^2 + w2 * r1 * x + b      (times ``mul`` for the fused product)
The three r_k of every row (12 bytes) are saved for the backward.

Backward, with g = dL/dy (times ``mul`` for the product) and n_k = r_k * x^k:
    c_k    = sum(g * n_k)                                        (row sums)
    dL/dx  = 3 x^2 w0 r3 (g - n3 c3 / N) + 2 x w1 r2 (g - n2 c2 / N) + w2 r1 (g - n1 c1 / N)
    dL/dmul = dL/dy * PolyNorm(x)
The weight and bias gradients are sums over rows of (c3, c2, c1, sum(g)): every program writes its row's four
partial sums and ``torch.sum`` adds them in a fixed order, so they are deterministic without atomics.

Short rows are held in registers (one load per element, SINGLE_PASS); longer rows are processed in chunks with a
second pass over the row, whose re-read is meant to hit L2 (first-pass loads are marked evict_last, second-pass
loads evict_first). The backward holds more live values per element than the forward, so it switches to the
chunked path at shorter rows. Under tensor parallelism the row sums s_k and c_k are the quantities to all-reduce
across the TP group: both passes are written around them.
"""

import triton
import triton.language as tl

# Launch choices, measured on an H200 with `benchmarks/polynorm.py --sweep` (2 x 4096 rows, bf16, hidden 8192 and
# 16384; `benchmarks/results/polynorm_sweep_h200.json`): single pass only for the plain forward up to 8K elements
# (and every op up to 4K, where the row fits in registers), chunked two-pass beyond, 2K chunks and 4 warps except
# the x mul backward (4K chunks, 8 warps). Keys: (direction, has_mul).
MAX_FUSED_ROW = {("fwd", False): 8192, ("fwd", True): 4096, ("bwd", False): 4096, ("bwd", True): 4096}
ELEMENTS_PER_WARP = {"fwd": 2048, "bwd": 512}  # single-pass: one warp per this many row elements (1..32 warps)
CHUNK = {("fwd", False): 2048, ("fwd", True): 2048, ("bwd", False): 2048, ("bwd", True): 4096}
CHUNKED_WARPS = {("fwd", False): 4, ("fwd", True): 4, ("bwd", False): 4, ("bwd", True): 8}
# Chunked path: at most this many programs per SM, each looping over rows, so the rows in flight fit in L2 for
# the second pass (0 = one program per row).
CHUNKED_PROGRAMS_PER_SM = 0


def _config(n: int, direction: str, has_mul: bool) -> tuple[int, bool, int, int]:
    if n <= MAX_FUSED_ROW[(direction, has_mul)]:
        block = triton.next_power_of_2(n)
        return block, True, max(1, min(32, block // ELEMENTS_PER_WARP[direction])), 0
    return CHUNK[(direction, has_mul)], False, CHUNKED_WARPS[(direction, has_mul)], CHUNKED_PROGRAMS_PER_SM


def fwd_launch_config(n: int, has_mul: bool) -> tuple[int, bool, int, int]:
    """(BLOCK, SINGLE_PASS, num_warps, programs_per_sm) of the forward kernel for rows of ``n`` elements."""
    return _config(n, "fwd", has_mul)


def bwd_launch_config(n: int, has_mul: bool) -> tuple[int, bool, int, int]:
    """(BLOCK, SINGLE_PASS, num_warps, programs_per_sm) of the backward kernel for rows of ``n`` elements."""
    return _config(n, "bwd", has_mul)


@triton.jit
def _poly_norm_fwd_kernel(
    X, MUL, Y, W, B, RSTD,
    stride_x, stride_mul, stride_y,
    n_rows, N, eps,
    HAS_MUL: tl.constexpr, BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr,
):
    w0 = tl.load(W).to(tl.float32)
    w1 = tl.load(W + 1).to(tl.float32)
    w2 = tl.load(W + 2).to(tl.float32)
    b = tl.load(B).to(tl.float32)
    cols = tl.arange(0, BLOCK)
    # a program handles rows pid, pid + programs, ...: a grid smaller than the row count bounds the rows in flight
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        r = tl.cast(row, tl.int64)
        _poly_norm_fwd_row(X + r * stride_x, MUL + r * stride_mul, Y + r * stride_y, RSTD + r * 3,
                           w0, w1, w2, b, cols, N, eps, HAS_MUL, BLOCK, SINGLE_PASS)


@triton.jit
def _poly_norm_fwd_row(X, MUL, Y, RSTD, w0, w1, w2, b, cols, N, eps,
                       HAS_MUL: tl.constexpr, BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr):
    if SINGLE_PASS:
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        x2 = x * x
        x4 = x2 * x2
        r1 = tl.rsqrt(tl.sum(x2, axis=0) / N + eps)
        r2 = tl.rsqrt(tl.sum(x4, axis=0) / N + eps)
        r3 = tl.rsqrt(tl.sum(x4 * x2, axis=0) / N + eps)
        y = (w0 * r3) * (x2 * x) + (w1 * r2) * x2 + (w2 * r1) * x + b
        if HAS_MUL:
            y = y * tl.load(MUL + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + cols, y.to(Y.dtype.element_ty), mask=mask)
    else:
        acc2 = tl.zeros([BLOCK], dtype=tl.float32)
        acc4 = tl.zeros([BLOCK], dtype=tl.float32)
        acc6 = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            x = tl.load(X + start + cols, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
            x2 = x * x
            x4 = x2 * x2
            acc2 += x2
            acc4 += x4
            acc6 += x4 * x2
        r1 = tl.rsqrt(tl.sum(acc2, axis=0) / N + eps)
        r2 = tl.rsqrt(tl.sum(acc4, axis=0) / N + eps)
        r3 = tl.rsqrt(tl.sum(acc6, axis=0) / N + eps)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            x = tl.load(X + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            x2 = x * x
            y = (w0 * r3) * (x2 * x) + (w1 * r2) * x2 + (w2 * r1) * x + b
            if HAS_MUL:
                y = y * tl.load(MUL + start + cols, mask=mask, other=0.0,
                                eviction_policy="evict_first").to(tl.float32)
            tl.store(Y + start + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD, r1)
    tl.store(RSTD + 1, r2)
    tl.store(RSTD + 2, r3)


@triton.jit
def _poly_norm_bwd_kernel(
    GY, X, MUL, GX, GMUL, W, B, RSTD, PARTIALS,
    stride_gy, stride_x, stride_mul, stride_gx, stride_gmul,
    n_rows, N,
    HAS_MUL: tl.constexpr, BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr,
):
    w0 = tl.load(W).to(tl.float32)
    w1 = tl.load(W + 1).to(tl.float32)
    w2 = tl.load(W + 2).to(tl.float32)
    b = tl.load(B).to(tl.float32)
    cols = tl.arange(0, BLOCK)
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        r = tl.cast(row, tl.int64)
        _poly_norm_bwd_row(GY + r * stride_gy, X + r * stride_x, MUL + r * stride_mul, GX + r * stride_gx,
                           GMUL + r * stride_gmul, RSTD + r * 3, PARTIALS + r * 4,
                           w0, w1, w2, b, cols, N, HAS_MUL, BLOCK, SINGLE_PASS)


@triton.jit
def _poly_norm_bwd_row(GY, X, MUL, GX, GMUL, RSTD, PARTIALS, w0, w1, w2, b, cols, N,
                       HAS_MUL: tl.constexpr, BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr):
    r1 = tl.load(RSTD)
    r2 = tl.load(RSTD + 1)
    r3 = tl.load(RSTD + 2)
    if SINGLE_PASS:
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GY + cols, mask=mask, other=0.0).to(tl.float32)
        x2 = x * x
        n1 = r1 * x
        n2 = r2 * x2
        n3 = r3 * (x2 * x)
        if HAS_MUL:
            m = tl.load(MUL + cols, mask=mask, other=0.0).to(tl.float32)
            p = w0 * n3 + w1 * n2 + w2 * n1 + b
            tl.store(GMUL + cols, (g * p).to(GMUL.dtype.element_ty), mask=mask)
            g = g * m
        c1 = tl.sum(g * n1, axis=0)
        c2 = tl.sum(g * n2, axis=0)
        c3 = tl.sum(g * n3, axis=0)
        cb = tl.sum(g, axis=0)
        gx = ((3.0 * w0 * r3) * x2) * (g - n3 * (c3 / N)) \
            + ((2.0 * w1 * r2) * x) * (g - n2 * (c2 / N)) \
            + (w2 * r1) * (g - n1 * (c1 / N))
        tl.store(GX + cols, gx.to(GX.dtype.element_ty), mask=mask)
    else:
        acc1 = tl.zeros([BLOCK], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK], dtype=tl.float32)
        accb = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            x = tl.load(X + start + cols, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
            g = tl.load(GY + start + cols, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
            if HAS_MUL:
                g = g * tl.load(MUL + start + cols, mask=mask, other=0.0,
                                eviction_policy="evict_last").to(tl.float32)
            x2 = x * x
            acc1 += g * (r1 * x)
            acc2 += g * (r2 * x2)
            acc3 += g * (r3 * (x2 * x))
            accb += g
        c1 = tl.sum(acc1, axis=0)
        c2 = tl.sum(acc2, axis=0)
        c3 = tl.sum(acc3, axis=0)
        cb = tl.sum(accb, axis=0)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            x = tl.load(X + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            g = tl.load(GY + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            x2 = x * x
            n1 = r1 * x
            n2 = r2 * x2
            n3 = r3 * (x2 * x)
            if HAS_MUL:
                m = tl.load(MUL + start + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
                p = w0 * n3 + w1 * n2 + w2 * n1 + b
                tl.store(GMUL + start + cols, (g * p).to(GMUL.dtype.element_ty), mask=mask)
                g = g * m
            gx = ((3.0 * w0 * r3) * x2) * (g - n3 * (c3 / N)) \
                + ((2.0 * w1 * r2) * x) * (g - n2 * (c2 / N)) \
                + (w2 * r1) * (g - n1 * (c1 / N))
            tl.store(GX + start + cols, gx.to(GX.dtype.element_ty), mask=mask)
    tl.store(PARTIALS, c3)
    tl.store(PARTIALS + 1, c2)
    tl.store(PARTIALS + 2, c1)
    tl.store(PARTIALS + 3, cb)
