"""Causal attention with values twice as wide as queries and keys, fused into one Triton kernel per pass.

Grouped Differential Attention gives every query/key head a value of width Dv = 2 * D (D = 128, Dv = 256 in the
model). Two calls of a D-wide attention (one per value half) compute the same scores and softmax twice; the
kernels here compute them once per tile and apply the whole Dv-wide value.

    wide_value_attention(q, k, v, scale=None, *, dq_mode=None) -> o        differentiable (q, k, v)
    wide_value_attention_fwd(q, k, v, scale=None) -> (o, lse)               forward only, with the log-sum-exp

Shapes: q (B, Hq, S, D), k (B, Hkv, S, D), v (B, Hkv, S, Dv), o (B, Hq, S, Dv); Hq % Hkv == 0 and query head h
reads key/value head h // (Hq // Hkv) (GQA); causal (query i sees keys j <= i); scale defaults to D ** -0.5.
Inputs may be strided views (e.g. (B, S, H, D) tensors transposed to (B, H, S, D)): the kernels take strides.

Math, per (batch, query head), with c = scale:
    forward     S = c Q K^T (causal: S_ij = -inf for j > i),   L_i = log sum_j exp(S_ij),
                P = exp(S - L),                                 O = P V
    backward    dV = P^T dO                                    (summed over the query heads of a GQA group)
                dP = dO V^T,   delta_i = sum_e dO_ie O_ie = sum_j P_ij dP_ij
                dS = P * (dP - delta)                          (elementwise; delta broadcast along rows)
                dQ = c dS K,   dK = c dS^T Q                   (dK summed over the group like dV)

Forward kernel: one program per (query block, batch * query head). It streams key/value blocks with the online
softmax in base 2 (c * log2(e) is folded into one multiplier, so exp2 replaces exp), keeps the running max, the
running sum and the BLOCK_M x Dv output in fp32, and stops at the diagonal: key blocks wholly below the diagonal
run without a mask, only the blocks crossing it apply the causal mask (which also removes keys past the end of a
sequence that is not a multiple of the block). L (natural log, fp32, (B, Hq, S)) is saved for the backward.

Backward: (1) delta = rowsum(dO * O) in fp32, one small kernel; (2) one program per (key block, batch * kv head)
holds its K (BLOCK_N x D) and V (BLOCK_N x Dv) tiles, loops over the query heads of its group and over the query
blocks at and after the diagonal, recomputes P = exp2(log2(e) (c Q K^T - L)) from the saved L, accumulates dK
(BLOCK_N x D) and dV (BLOCK_N x Dv) in fp32 registers: no atomics for dK / dV, even under GQA. dQ either way
(``dq_mode`` / the module setting ``DQ_MODE``):
    "atomic"   (default) the dK/dV kernel also forms c dS K for its tile and atomically adds it into an fp32
               (B, Hq, S, D) buffer, cast to the input dtype at the end: nothing is recomputed; the adds are
               unordered, so dQ is not bitwise deterministic.
    "separate" a dQ kernel, one program per (query block, batch * query head), loops over the key blocks up to
               the diagonal and recomputes Q K^T and dP = dO V^T: deterministic, no fp32 buffer, more FLOPs.

Matmul FLOPs per (BLOCK_M x BLOCK_N) tile, in units of 2 * BLOCK_M * BLOCK_N * D (one D-wide product; a Dv-wide
product is 2 units), against two D-wide FlashAttention calls (one per value half):
    forward        Q K^T (1) + P V (2)                          = 3   vs 2 x (1 + 1)       = 4
    backward, atomic dQ:  Q K^T (1) + dO V^T (2) + P^T dO (2) + dS^T Q (1) + dS K (1) = 7
    backward, separate dQ: those without dS K (6), plus Q K^T (1) + dO V^T (2) + dS K (1) in the dQ kernel = 10
               vs 2 x (Q K^T, dO V^T, P^T dO, dS^T Q, dS K) = 10 for two FlashAttention-2 backward calls
               (which also evaluate the softmax exponentials twice; the separate mode evaluates them twice too).
The exponentials (BLOCK_M * BLOCK_N per tile) are computed once in the forward and once in the atomic backward,
instead of twice each.

Measured (one H100, torch 2.11, bf16, batch 2 x 4096 tokens; ``benchmarks/gda_attention.py``, the table in
benchmarks/RESULTS.md "GDA attention"): correct, but slower than cuDNN. At the 12.7B's signal attention (32 q heads,
8 kv heads) the kernels take 5.29 ms of GPU time forward + backward with separate dQ (5.97 ms atomic) against
4.24 ms for two 128-wide cuDNN calls: the forward is on par, the dK/dV kernel spills registers at every tried tile
shape. motif2 does not use these kernels; it applies the 256-wide value with cuDNN (``gda_value_path``).

Launch: on CUDA every kernel is autotuned (``triton.autotune``, keyed on S, D, Dv and the head counts; the
tensor dtypes are part of the key too) over a few H100 (sm90) configurations, pruned by a rough shared-memory
and register estimate (Dv = 256 fp32 accumulators are the binding constraint). The atomic dK/dV/dQ kernel is
tuned with ``reset_to_zero`` on the dQ buffer, which the autotuner also re-zeroes after its sweep. Under the
Triton interpreter (``TRITON_INTERPRET=1``, CPU tensors) the kernels launch once with the small block sizes of
``INTERPRETER_BLOCKS`` instead. fp32 inputs use IEEE fp32 products (``FP32_DOT_PRECISION``; "tf32" is faster).
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

DQ_MODES = ("atomic", "separate")
DQ_MODE = "atomic"  # default of wide_value_attention(..., dq_mode=None)
FP32_DOT_PRECISION = "ieee"  # tl.dot input precision for fp32 inputs: "ieee" | "tf32" | "tf32x3"
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256
# (BLOCK_M, BLOCK_N) of each kernel under the interpreter: BLOCK_M is the query block, BLOCK_N the key block
INTERPRETER_BLOCKS = {"fwd": (16, 16), "dkdv": (16, 16), "dq": (16, 16)}

_LOG2E = 1.4426950408889634

# ---- autotuning -------------------------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, num_warps, num_stages). Larger tiles only survive the pruning for narrower heads.
# Compiled ahead of time for sm_90a (bf16, D = 128, Dv = 256; ptxas, no run): every forward and dQ entry kept
# by the pruning compiles without spills (<= 8 bytes); the dK/dV kernel holds 64 x 384 fp32 accumulators and
# spills 10-500 bytes per thread (fewest with BLOCK_M = 16 or BLOCK_N = 32, hence those entries).
FWD_CONFIGS = [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 2), (64, 64, 4, 2), (64, 64, 8, 3),
               (64, 128, 8, 2), (128, 128, 8, 2)]
DKDV_CONFIGS = [(16, 64, 8, 2), (16, 64, 8, 3), (32, 64, 8, 2), (64, 64, 8, 2), (64, 32, 8, 2), (32, 32, 4, 2),
                (128, 128, 8, 2)]
DQ_CONFIGS = [(64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 3),
              (128, 128, 8, 2)]
TUNING_KEY = ["S", "H_Q", "GROUP", "D", "DV"]
SMEM_BUDGET = 200 * 1024  # bytes of the ~227 KiB an sm90 block may use, leaving room for layout conversions
REG_BUDGET = 200  # fp32 accumulator/tile registers per thread (of 255), leaving room for addresses and operands


def _configs(table) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in table]


def config_cost(kind: str, block_m: int, block_n: int, num_warps: int, num_stages: int, d: int, dv: int,
                elt: int) -> tuple[int, float]:
    """Rough (shared-memory bytes, fp32 registers per thread) of one program of ``kind`` ("fwd", "dkdv_atomic",
    "dkdv", "dq"): the tiles streamed through shared memory times the pipeline depth plus the resident operand
    tiles, and the fp32 accumulators and score tiles spread over the threads."""
    threads = 32 * num_warps
    if kind == "fwd":  # resident Q; streamed K, V; acc (M x Dv) + scores and probabilities (M x N)
        smem = block_m * d * elt + num_stages * block_n * (d + dv) * elt
        regs = (block_m * dv + 2 * block_m * block_n) / threads
    elif kind in ("dkdv", "dkdv_atomic"):  # resident K, V; streamed Q, dO; dK, dV accs + P^T, dP^T (+ dQ tile)
        smem = block_n * (d + dv) * elt + num_stages * block_m * (d + dv) * elt
        regs = (block_n * (d + dv) + 2 * block_m * block_n + (block_m * d if kind == "dkdv_atomic" else 0)) / threads
    elif kind == "dq":  # resident Q, dO; streamed K, V; dQ acc + P, dP
        smem = block_m * (d + dv) * elt + num_stages * block_n * (d + dv) * elt
        regs = (block_m * d + 2 * block_m * block_n) / threads
    else:
        raise ValueError(f"kind = {kind!r}; allowed: 'fwd', 'dkdv', 'dkdv_atomic', 'dq'")
    return smem, regs


def _pruner(kind: str):
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        d, dv, elt = args["D"], args["DV"], args["Q"].element_size()
        costs = {c: config_cost(kind, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, d, dv,
                                elt) for c in configs}
        kept = [c for c in configs if costs[c][0] <= SMEM_BUDGET and costs[c][1] <= REG_BUDGET]
        # never empty: fall back to the lightest configuration
        return kept or [min(configs, key=lambda c: (costs[c][1], costs[c][0]))]
    return prune


def pruned_configs(kind: str, d: int, dv: int, dtype: torch.dtype) -> list[tuple[int, int, int, int]]:
    """The (BLOCK_M, BLOCK_N, num_warps, num_stages) the autotuner would time for these head dims and dtype."""
    table = {"fwd": FWD_CONFIGS, "dkdv": DKDV_CONFIGS, "dkdv_atomic": DKDV_CONFIGS, "dq": DQ_CONFIGS}[kind]
    q = torch.empty(0, dtype=dtype)
    kept = _pruner(kind)(_configs(table), {"Q": q, "D": d, "DV": dv})
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept]


# ---- kernels ----------------------------------------------------------------------------------------------

@triton.jit
def _mm(a, b, acc, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """tl.dot(a, b, acc). The interpreter of Triton 3.9 multiplies bfloat16 operands as their raw uint16 bits, so
    there they are widened to fp32 first (exact, so the result is still that of bf16 products summed in fp32)."""
    if INTERPRET:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
        if b.dtype == tl.bfloat16:
            b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _tile_ptrs(base, rows, cols, stride_row, stride_col):
    """Pointers to the (rows x cols) tile at ``base``. Built next to each load rather than once before a loop: a
    loop-invariant tile of 64-bit pointers would hold BLOCK x Dv registers across the whole loop."""
    return base + rows[:, None] * stride_row + cols[None, :] * stride_col


@triton.jit
def _query_program(H_Q, GROUP, BLOCK_M: tl.constexpr):
    """(batch * q head, batch, q head, kv head, first query) of a program over (query blocks, batch * q heads);
    the longest rows (last query blocks) are launched first, for a shorter tail."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H_Q).to(tl.int64)
    h = (pid_bh % H_Q).to(tl.int64)
    return pid_bh, b, h, h // GROUP, pid_m * BLOCK_M


@triton.jit
def _key_block_scores(q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
                      stride_ks, stride_kd, stride_vs, stride_vd,
                      CAUSAL_MASK: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """The key block at ``start_n``: its K and V tiles and the query block's scores against it (log2 units), with
    the causal mask on blocks crossing the diagonal (it also removes keys past the end of the sequence, which lie
    above the diagonal of every real query row)."""
    keys = start_n + offs_n
    k_ptrs = _tile_ptrs(k_base, keys, offs_d, stride_ks, stride_kd)
    v_ptrs = _tile_ptrs(v_base, keys, offs_dv, stride_vs, stride_vd)
    if CAUSAL_MASK:
        k = tl.load(k_ptrs, mask=(keys < S)[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=(keys < S)[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    s = _mm(q, tl.trans(k), None, PREC, INTERPRET) * qk_scale
    if CAUSAL_MASK:
        s = tl.where(offs_m[:, None] >= keys[None, :], s, float("-inf"))
    return k, v, s


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
              stride_ks, stride_kd, stride_vs, stride_vd,
              CAUSAL_MASK: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """One key block of the online softmax (scores in log2 units)."""
    k, v, s = _key_block_scores(q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
                                stride_ks, stride_kd, stride_vs, stride_vd, CAUSAL_MASK, PREC, INTERPRET)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _mm(p.to(v.dtype), v, acc * alpha[:, None], PREC, INTERPRET)
    return acc, m_new, l_i


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_os, stride_od,
    S, H_Q, GROUP, qk_scale,
    D: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_bh, b, h, hk, start_m = _query_program(H_Q, GROUP, BLOCK_M)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=(offs_m < S)[:, None], other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
    # key blocks ending at or before start_m: no query of this block is masked there
    diag_lo = (start_m // BLOCK_N) * BLOCK_N
    for start_n in range(0, diag_lo, BLOCK_N):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S,
                                  qk_scale, stride_ks, stride_kd, stride_vs, stride_vd, False, PREC, INTERPRET)
    # blocks crossing the diagonal; each query row keeps key diag_lo <= start_m, so no row is all -inf
    diag_hi = tl.minimum(start_m + BLOCK_M, S)
    for start_n in range(diag_lo, diag_hi, BLOCK_N):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S,
                                  qk_scale, stride_ks, stride_kd, stride_vs, stride_vd, True, PREC, INTERPRET)

    acc = acc / l_i[:, None]
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # natural log
    rows = offs_m < S
    tl.store(LSE + pid_bh.to(tl.int64) * S + offs_m, lse, mask=rows)
    tl.store(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_dv[None, :] * stride_od,
             acc.to(O.dtype.element_ty), mask=rows[:, None])


@triton.jit
def _delta_kernel(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_dob, stride_doh, stride_dos, stride_dod,
    S, H_Q,
    DV: tl.constexpr, BLOCK: tl.constexpr,
):
    pid_bh = tl.program_id(1)
    b = (pid_bh // H_Q).to(tl.int64)
    h = (pid_bh % H_Q).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_dv = tl.arange(0, DV)
    rows = (offs_m < S)[:, None]
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_dv[None, :] * stride_od,
                mask=rows, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dos + offs_dv[None, :] * stride_dod,
                 mask=rows, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * S + offs_m, delta, mask=offs_m < S)


@triton.jit
def _dkdv_tile(dk, dv, k, v, q_base, do_base, dq_base, lse_ptr, delta_ptr, offs_m, offs_n, offs_d, offs_dv, start_m,
               S, qk_scale, sm_scale, stride_qs, stride_qd, stride_dos, stride_dod, stride_dqs, stride_dqd,
               CAUSAL_MASK: tl.constexpr, COMPUTE_DQ: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """One query block against the program's key block, in the transposed (keys x queries) orientation."""
    queries = start_m + offs_m
    rows = queries < S
    q = tl.load(_tile_ptrs(q_base, queries, offs_d, stride_qs, stride_qd), mask=rows[:, None], other=0.0)
    do = tl.load(_tile_ptrs(do_base, queries, offs_dv, stride_dos, stride_dod), mask=rows[:, None], other=0.0)
    # padded query rows get L = +inf, hence P = 0 and no contribution
    lse2 = tl.load(lse_ptr + queries, mask=rows, other=float("inf")) * 1.4426950408889634
    delta = tl.load(delta_ptr + queries, mask=rows, other=0.0)
    s_t = _mm(k, tl.trans(q), None, PREC, INTERPRET) * qk_scale  # (BLOCK_N, BLOCK_M), log2 units
    if CAUSAL_MASK:
        s_t = tl.where(queries[None, :] >= offs_n[:, None], s_t, float("-inf"))
    p_t = tl.exp2(s_t - lse2[None, :])
    dv = _mm(p_t.to(do.dtype), do, dv, PREC, INTERPRET)
    dp_t = _mm(v, tl.trans(do), None, PREC, INTERPRET)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = _mm(ds_t.to(q.dtype), q, dk, PREC, INTERPRET)
    if COMPUTE_DQ:
        dq = _mm(tl.trans(ds_t.to(k.dtype)), k, None, PREC, INTERPRET) * sm_scale
        tl.atomic_add(_tile_ptrs(dq_base, queries, offs_d, stride_dqs, stride_dqd), dq, mask=rows[:, None],
                      sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, DK, DV_OUT, DQ, LSE, DELTA,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    stride_dqb, stride_dqh, stride_dqs, stride_dqd,
    S, H_Q, GROUP, qk_scale, sm_scale,
    D: tl.constexpr, DV: tl.constexpr, COMPUTE_DQ: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    pid_bh = tl.program_id(1)  # batch * kv head
    h_kv = H_Q // GROUP
    b = (pid_bh // h_kv).to(tl.int64)
    hk = (pid_bh % h_kv).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    keys = (offs_n < S)[:, None]

    k = tl.load(K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                mask=keys, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vs + offs_dv[None, :] * stride_vd,
                mask=keys, other=0.0)
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, DV], dtype=tl.float32)

    # query blocks before diag_lo see none of these keys; from diag_hi on they see all of them
    diag_lo = (start_n // BLOCK_M) * BLOCK_M
    diag_hi = ((start_n + BLOCK_N + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        h = hk * GROUP + g
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        dq_base = DQ + b * stride_dqb + h * stride_dqh
        row0 = (b * H_Q + h) * S
        for start_m in range(diag_lo, tl.minimum(diag_hi, S), BLOCK_M):
            dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, dq_base, LSE + row0, DELTA + row0, offs_m, offs_n,
                                offs_d, offs_dv, start_m, S, qk_scale, sm_scale, stride_qs, stride_qd, stride_dos,
                                stride_dod, stride_dqs, stride_dqd, True, COMPUTE_DQ, PREC, INTERPRET)
        for start_m in range(diag_hi, S, BLOCK_M):
            dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, dq_base, LSE + row0, DELTA + row0, offs_m, offs_n,
                                offs_d, offs_dv, start_m, S, qk_scale, sm_scale, stride_qs, stride_qd, stride_dos,
                                stride_dod, stride_dqs, stride_dqd, False, COMPUTE_DQ, PREC, INTERPRET)

    dk = dk * sm_scale
    tl.store(DK + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :] * stride_dkd,
             dk.to(DK.dtype.element_ty), mask=keys)
    tl.store(DV_OUT + b * stride_dvb + hk * stride_dvh + offs_n[:, None] * stride_dvs + offs_dv[None, :] * stride_dvd,
             dv.to(DV_OUT.dtype.element_ty), mask=keys)


@triton.jit
def _dq_tile(dq, q, do, lse2, delta, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
             stride_ks, stride_kd, stride_vs, stride_vd,
             CAUSAL_MASK: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    k, v, s = _key_block_scores(q, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
                                stride_ks, stride_kd, stride_vs, stride_vd, CAUSAL_MASK, PREC, INTERPRET)
    p = tl.exp2(s - lse2[:, None])
    dp = _mm(do, tl.trans(v), None, PREC, INTERPRET)
    ds = p * (dp - delta[:, None])
    return _mm(ds.to(k.dtype), k, dq, PREC, INTERPRET)


@triton.jit
def _dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_dqb, stride_dqh, stride_dqs, stride_dqd,
    S, H_Q, GROUP, qk_scale, sm_scale,
    D: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_bh, b, h, hk, start_m = _query_program(H_Q, GROUP, BLOCK_M)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    rows = offs_m < S

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=rows[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dos + offs_dv[None, :] * stride_dod,
                 mask=rows[:, None], other=0.0)
    row0 = pid_bh.to(tl.int64) * S
    lse2 = tl.load(LSE + row0 + offs_m, mask=rows, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + row0 + offs_m, mask=rows, other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh

    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    diag_lo = (start_m // BLOCK_N) * BLOCK_N
    for start_n in range(0, diag_lo, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse2, delta, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
                      stride_ks, stride_kd, stride_vs, stride_vd, False, PREC, INTERPRET)
    for start_n in range(diag_lo, tl.minimum(start_m + BLOCK_M, S), BLOCK_N):
        dq = _dq_tile(dq, q, do, lse2, delta, k_base, v_base, offs_m, offs_n, offs_d, offs_dv, start_n, S, qk_scale,
                      stride_ks, stride_kd, stride_vs, stride_vd, True, PREC, INTERPRET)
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqs + offs_d[None, :] * stride_dqd,
             dq.to(DQ.dtype.element_ty), mask=rows[:, None])


_fwd_tuned = triton.autotune(_configs(FWD_CONFIGS), key=TUNING_KEY,
                             prune_configs_by={"early_config_prune": _pruner("fwd")})(_fwd_kernel)
# the atomic variant adds into DQ: every timed launch starts from (and the sweep leaves) a zeroed buffer
_dkdv_atomic_tuned = triton.autotune(_configs(DKDV_CONFIGS), key=TUNING_KEY, reset_to_zero=["DQ"],
                                     prune_configs_by={"early_config_prune": _pruner("dkdv_atomic")})(_dkdv_kernel)
_dkdv_tuned = triton.autotune(_configs(DKDV_CONFIGS), key=TUNING_KEY,
                              prune_configs_by={"early_config_prune": _pruner("dkdv")})(_dkdv_kernel)
_dq_tuned = triton.autotune(_configs(DQ_CONFIGS), key=TUNING_KEY,
                            prune_configs_by={"early_config_prune": _pruner("dq")})(_dq_kernel)


# ---- launches ---------------------------------------------------------------------------------------------

def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _launch(tuned, raw, kind: str, grid_rows: int, grid_cols: int, *args, **constexprs) -> None:
    """Autotuned launch on CUDA; one launch with INTERPRETER_BLOCKS[kind] under the interpreter."""
    if _triton_interpret():
        block_m, block_n = INTERPRETER_BLOCKS[kind]
        rows = block_m if kind in ("fwd", "dq") else block_n
        raw[(triton.cdiv(grid_rows, rows), grid_cols)](*args, **constexprs, INTERPRET=True, BLOCK_M=block_m,
                                                       BLOCK_N=block_n)
        return
    if kind in ("fwd", "dq"):
        grid = lambda meta: (triton.cdiv(grid_rows, meta["BLOCK_M"]), grid_cols)  # noqa: E731
    else:
        grid = lambda meta: (triton.cdiv(grid_rows, meta["BLOCK_N"]), grid_cols)  # noqa: E731
    tuned[grid](*args, **constexprs, INTERPRET=False)


def _precision(dtype: torch.dtype) -> str:
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"  # ignored for 16-bit operands


def _empty_like_layout(like: Tensor, last: int, dtype: torch.dtype) -> Tensor:
    """(B, H, S, last) tensor laid out as (B, S, H, last) when ``like`` is (a view with heads inside sequence)."""
    b, h, s, _ = like.shape
    if h > 1 and s > 1 and like.stride(1) < like.stride(2):
        return torch.empty(b, s, h, last, dtype=dtype, device=like.device).transpose(1, 2)
    return torch.empty(b, h, s, last, dtype=dtype, device=like.device)


def _forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    b, h_q, s, d = q.shape
    h_kv, dv = k.shape[1], v.shape[-1]
    o = _empty_like_layout(q, dv, q.dtype)
    lse = torch.empty(b, h_q, s, dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    _launch(_fwd_tuned, _fwd_kernel, "fwd", s, b * h_q,
            q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            s, h_q, h_q // h_kv, scale * _LOG2E, D=d, DV=dv, PREC=_precision(q.dtype))
    return o, lse


def _backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, scale: float,
              dq_mode: str) -> tuple[Tensor, Tensor, Tensor]:
    b, h_q, s, d = q.shape
    h_kv, dv = k.shape[1], v.shape[-1]
    dk, dv_out = torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0 or v.numel() == 0:
        return torch.zeros_like(q), dk.zero_(), dv_out.zero_()
    prec, group = _precision(q.dtype), h_q // h_kv
    delta = torch.empty(b, h_q, s, dtype=torch.float32, device=q.device)
    block = 16 if _triton_interpret() else max(16, min(128, 16384 // dv))
    _delta_kernel[(triton.cdiv(s, block), b * h_q)](o, do, delta, *o.stride(), *do.stride(), s, h_q,
                                                     DV=dv, BLOCK=block, num_warps=4)
    if dq_mode == "atomic":
        # fp32 inputs: add straight into the gradient; 16-bit: into an fp32 buffer cast at the end
        dq_acc = (torch.zeros_like(q) if q.dtype == torch.float32
                  else torch.zeros(b, h_q, s, d, dtype=torch.float32, device=q.device))
        _launch(_dkdv_atomic_tuned, _dkdv_kernel, "dkdv", s, b * h_kv,
                q, k, v, do, dk, dv_out, dq_acc, lse, delta,
                *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv_out.stride(),
                *dq_acc.stride(), s, h_q, group, scale * _LOG2E, scale,
                D=d, DV=dv, COMPUTE_DQ=True, PREC=prec)
        if dq_acc.dtype == q.dtype:
            return dq_acc, dk, dv_out
        return torch.empty_like(q).copy_(dq_acc), dk, dv_out
    dq = torch.empty_like(q)
    _launch(_dkdv_tuned, _dkdv_kernel, "dkdv", s, b * h_kv,
            q, k, v, do, dk, dv_out, dq, lse, delta,  # DQ is not touched without COMPUTE_DQ
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv_out.stride(),
            *dq.stride(), s, h_q, group, scale * _LOG2E, scale,
            D=d, DV=dv, COMPUTE_DQ=False, PREC=prec)
    _launch(_dq_tuned, _dq_kernel, "dq", s, b * h_q,
            q, k, v, do, dq, lse, delta,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            s, h_q, group, scale * _LOG2E, scale, D=d, DV=dv, PREC=prec)
    return dq, dk, dv_out


# ---- validation and public API ----------------------------------------------------------------------------

def _is_head_dim(n: int) -> bool:
    return MIN_HEAD_DIM <= n <= MAX_HEAD_DIM and n & (n - 1) == 0


def _check(q: Tensor, k: Tensor, v: Tensor, dq_mode: str | None = None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, S, head_dim), got shape {tuple(t.shape)}")
    (b, h_q, s, d), (h_kv, dv) = q.shape, (k.shape[1], v.shape[-1])
    for name, t in (("k", k), ("v", v)):
        if t.shape[0] != b or t.shape[2] != s:
            raise ValueError(f"{name} must have q's batch size B = {b} and sequence length S = {s} (dims 0 and 2), "
                             f"got shape {tuple(t.shape)}")
    if v.shape[1] != h_kv:
        raise ValueError(f"v must have k's head count Hkv = {h_kv} (dim 1), got shape {tuple(v.shape)}")
    if k.shape[-1] != d:
        raise ValueError(f"k must have q's head dim D = {d} (last dim), got shape {tuple(k.shape)}")
    if h_kv == 0 or h_q % h_kv:
        raise ValueError(f"q's head count Hq = {h_q} must be divisible by k/v's head count Hkv = {h_kv}")
    if not _is_head_dim(d):
        raise ValueError(f"D (last dim of q and k) must be a power of two in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], "
                         f"got {d}")
    if not _is_head_dim(dv):
        raise ValueError(f"Dv (last dim of v) must be a power of two in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], "
                         f"got {dv}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise ValueError(f"q, k, v must share one dtype out of {DTYPES}, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    if dq_mode is not None and dq_mode not in DQ_MODES:
        raise ValueError(f"dq_mode = {dq_mode!r}; allowed: {DQ_MODES} (or None for DQ_MODE = {DQ_MODE!r})")
    if not q.is_cuda and not _triton_interpret():
        raise RuntimeError("wide_value_attention on non-CUDA tensors needs the Triton interpreter: set "
                           "TRITON_INTERPRET=1 before motif_titan is imported")


def _scale(q: Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


class _WideValueAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, dq_mode):
        o, lse = _forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.dq_mode = scale, dq_mode
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.scale, ctx.dq_mode)
        return dq, dk, dv, None, None


def wide_value_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, *,
                         dq_mode: str | None = None) -> Tensor:
    """Causal GQA attention softmax(scale * q k^T) v with v twice (or any power-of-two times) as wide as q and k.

    q (B, Hq, S, D), k (B, Hkv, S, D), v (B, Hkv, S, Dv) -> (B, Hq, S, Dv) in q's dtype; differentiable in q, k,
    v. ``scale`` defaults to D ** -0.5; ``dq_mode`` ("atomic" | "separate", default the module's DQ_MODE) picks
    how the backward computes dq (see the module docstring)."""
    _check(q, k, v, dq_mode)
    if not math.isfinite(_scale(q, scale)):
        raise ValueError(f"scale must be a finite float, got {scale}")
    return _WideValueAttention.apply(q, k, v, _scale(q, scale), dq_mode or DQ_MODE)


def wide_value_attention_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Forward only (no autograd): (o, lse) with lse (B, Hq, S) fp32 the natural-log log-sum-exp of each query's
    scaled, masked scores."""
    _check(q, k, v)
    if not math.isfinite(_scale(q, scale)):
        raise ValueError(f"scale must be a finite float, got {scale}")
    return _forward(q, k, v, _scale(q, scale))
