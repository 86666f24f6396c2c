"""Benchmark of the fused PolyNorm kernels against plain PyTorch ("naive"), torch.compile of the same function and
Liger-Kernel's PolyNorm.

    python benchmarks/polynorm.py                       # the report's grid, BF16 (needs a CUDA GPU)
    python benchmarks/polynorm.py --hidden 16384 --seq 4096 --batch 2 --sweep-warps

Baselines: "compile" = ``torch.compile(reference, dynamic=False)`` compiled afresh for every (op, hidden size)
(``torch._dynamo.reset()`` first), so every shape runs a kernel specialized to it, warmed before timing;
"liger" = ``liger_kernel.ops.poly_norm.LigerPolyNormFunction`` (its default in_place backward), followed by a
separate multiply for the x mul op (skipped when liger_kernel is not importable).
Grid (report Table 3): hidden 8192 and 16384, sequence 1K/2K/4K/8K, batch 1/2/4; ops PolyNorm and PolyNorm x mul,
forward and backward timed separately. Every timing is GPU time of a CUDA-graph replay (triton's
``do_bench_cudagraph``), so CPU launch overhead is excluded for all three implementations alike. Forward is the
training forward (inputs require grad); backward is the time of forward + ``torch.autograd.grad`` minus the
forward, both captured the same way for all three (a backward must run on the stream of its forward).
Bandwidth = minimum bytes moved (forward: read x (and mul), write y; backward: read x, grad_y (and mul), write
grad_x (and grad_mul)) / time, compared with a device-to-device copy of 1 GiB measured in the same run
(read + write counted). Prints a markdown summary and writes every measurement to --out (JSON).
"""

import argparse
import itertools
import json
import math
import sys
import time

import torch
import triton
import triton.language as tl
import triton.testing

from motif_titan.kernels import poly_norm, poly_norm_mul, poly_norm_mul_reference, poly_norm_reference
from motif_titan.kernels import polynorm_triton
from motif_titan.kernels.polynorm import poly_norm_bwd, poly_norm_fwd, poly_norm_mul_bwd, poly_norm_mul_fwd

from environment import driver_version  # benchmarks/environment.py

EPS = 1e-6
OPS = ("poly_norm", "poly_norm_mul")
IMPLS = ("triton", "naive", "compile", "liger")
BENCH_REP_MS = 100


def bench(fn) -> float:
    """Median GPU milliseconds of ``fn`` replayed from a CUDA graph."""
    return triton.testing.do_bench_cudagraph(fn, rep=BENCH_REP_MS, return_mode="median")


@triton.jit
def _copy_kernel(SRC, DST, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(DST + offs, tl.load(SRC + offs, mask=mask), mask=mask)


def copy_bandwidth(nbytes: int = 1 << 30) -> dict[str, float]:
    """Device-to-device copy of ``nbytes`` (read + write counted): torch's copy_ and a plain Triton copy kernel.
    The faster one is the baseline the kernels are held to."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    out = {"torch_copy": 2 * nbytes / (bench(lambda: dst.copy_(src)) * 1e-3)}
    for block in (1024, 4096):
        grid = (triton.cdiv(src.numel(), block),)
        ms = bench(lambda: _copy_kernel[grid](src, dst, src.numel(), BLOCK=block, num_warps=4))
        out[f"triton_copy_block{block}"] = 2 * nbytes / (ms * 1e-3)
    assert torch.equal(dst, src)
    return out


def _liger():
    try:
        from liger_kernel.ops.poly_norm import LigerPolyNormFunction
    except ImportError:
        return None
    return LigerPolyNormFunction


def make_fn(op: str, impl: str, compiled: dict, hidden: int = 0):
    if impl == "liger":
        liger = _liger()
        # Liger takes a 0-d bias (its backward returns a 0-d grad): a view of ours
        return (lambda x, m, w, b: liger.apply(x, w, b.view(()), EPS)) if op == "poly_norm" else (
            lambda x, m, w, b: liger.apply(x, w, b.view(()), EPS) * m)
    if impl == "triton":
        return (lambda x, m, w, b: poly_norm(x, w, b, EPS, backend="triton")) if op == "poly_norm" else (
            lambda x, m, w, b: poly_norm_mul(x, m, w, b, EPS, backend="triton"))
    ref = (lambda x, m, w, b: poly_norm_reference(x, w, b, EPS)) if op == "poly_norm" else (
        lambda x, m, w, b: poly_norm_mul_reference(x, m, w, b, EPS))
    if impl == "naive":
        return ref
    if (op, hidden) not in compiled:
        # a fresh compile for every (op, width): no shape seen before can make this one dynamic
        torch._dynamo.reset()
        compiled.clear()
        compiled[(op, hidden)] = torch.compile(ref, dynamic=False)
    return compiled[(op, hidden)]


def min_bytes(op: str, direction: str, numel: int, elem: int) -> int:
    tensors = {("poly_norm", "fwd"): 2, ("poly_norm_mul", "fwd"): 3,
               ("poly_norm", "bwd"): 3, ("poly_norm_mul", "bwd"): 5}[(op, direction)]
    return tensors * numel * elem


def time_one(op, impl, rows, hidden, dtype, compiled):
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    m = torch.randn(rows, hidden, device="cuda", dtype=dtype) if op == "poly_norm_mul" else None
    w = torch.tensor([0.6, 0.3, 0.9], device="cuda")
    b = torch.tensor([0.1], device="cuda")
    fn = make_fn(op, impl, compiled, hidden)
    leaves = [t.requires_grad_() for t in (x, m, w, b) if t is not None]
    grad_y = torch.randn_like(x)
    for _ in range(2):  # warm: compile (forward and backward graphs) and autotune outside the timed region
        torch.autograd.grad(fn(x, m, w, b), leaves, grad_y)
    torch.cuda.synchronize()
    # training forward (inputs require grad: compile's forward also writes what its backward saves)
    fwd = bench(lambda: fn(x, m, w, b))
    # backward = (forward + backward) - forward: the backward must be captured on the forward's stream
    fwd_bwd = bench(lambda: torch.autograd.grad(fn(x, m, w, b), leaves, grad_y))
    return fwd, fwd_bwd - fwd


def check_against_float64(rows, hidden, dtype):
    """Max error of the Triton path vs float64 on one benchmark shape (values and every gradient)."""
    torch.manual_seed(0)
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    m = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    w = torch.tensor([0.6, -0.3, 0.9], device="cuda")
    b = torch.tensor([0.1], device="cuda")
    gy = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    report = {}
    for op in OPS:
        leaves = [t.clone().requires_grad_() for t in (x, m, w, b)]
        ref_leaves = [t.detach().double().requires_grad_() for t in (x, m, w, b)]
        if op == "poly_norm":
            y = poly_norm(leaves[0], leaves[2], leaves[3], EPS, backend="triton")
            y_ref = poly_norm_reference(ref_leaves[0], ref_leaves[2], ref_leaves[3], EPS)
        else:
            y = poly_norm_mul(leaves[0], leaves[1], leaves[2], leaves[3], EPS, backend="triton")
            y_ref = poly_norm_mul_reference(ref_leaves[0], ref_leaves[1], ref_leaves[2], ref_leaves[3], EPS)
        y.backward(gy)
        y_ref.backward(gy.double())
        errs = {"y": ((y.double() - y_ref).abs().max() / y_ref.abs().max()).item()}
        for name, a, r in zip(("x", "mul", "weight", "bias"), leaves, ref_leaves):
            if r.grad is not None:
                errs[f"grad_{name}"] = ((a.grad.double() - r.grad).abs().max() / r.grad.abs().max()).item()
        report[op] = errs
    return report


def check_liger_against_float64(rows, hidden, dtype):
    """Max error of Liger's PolyNorm (the baseline) vs float64: values and grad_x."""
    torch.manual_seed(0)
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    w = torch.tensor([0.6, -0.3, 0.9], device="cuda")
    b = torch.tensor([0.1], device="cuda")
    gy = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    xl = x.clone().requires_grad_()
    y = _liger().apply(xl, w, b.view(()), EPS)
    y.backward(gy.clone())
    xr = x.double().requires_grad_()
    y_ref = poly_norm_reference(xr, w.double(), b.double(), EPS)
    y_ref.backward(gy.double())
    return {"y": ((y.double() - y_ref).abs().max() / y_ref.abs().max()).item(),
            "grad_x": ((xl.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()).item()}


def kernel_times(rows, hidden, dtype):
    """Kernel-only times (ms) of the four custom ops, no autograd: {op: (fwd, bwd)}."""
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    m = torch.randn_like(x)
    gy = torch.randn_like(x)
    w = torch.tensor([0.6, 0.3, 0.9], device="cuda")
    b = torch.tensor([0.1], device="cuda")
    _, rstd = poly_norm_fwd(x, w, b, EPS)
    return {
        "poly_norm": (bench(lambda: poly_norm_fwd(x, w, b, EPS)), bench(lambda: poly_norm_bwd(gy, x, w, b, rstd))),
        "poly_norm_mul": (bench(lambda: poly_norm_mul_fwd(x, m, w, b, EPS)),
                          bench(lambda: poly_norm_mul_bwd(gy, x, m, w, b, rstd))),
    }


def sweep_launch_configs(rows, hidden, dtype):
    """Kernel times of launch configurations (the launch heuristics in polynorm_triton are chosen from this):
    single-pass with several num_warps, and the chunked two-pass path with several chunk lengths and warps."""
    saved = polynorm_triton.fwd_launch_config, polynorm_triton.bwd_launch_config
    block = triton.next_power_of_2(hidden)
    configs = [(block, True, w, 0) for w in (4, 8, 16, 32)]
    configs += [(chunk, False, w, 0) for chunk in (2048, 4096, 8192) for w in (4, 8, 16) if chunk < hidden]
    out = {}
    for config in configs:
        polynorm_triton.fwd_launch_config = polynorm_triton.bwd_launch_config = lambda n, mul, c=config: c
        try:
            out[str(config)] = kernel_times(rows, hidden, dtype)
        finally:
            polynorm_triton.fwd_launch_config, polynorm_triton.bwd_launch_config = saved
    return out


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--seq", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--sweep", action="store_true",
                        help="only time launch configurations per hidden size (2 x 4096 rows) and exit")
    parser.add_argument("--rep-ms", type=int, default=BENCH_REP_MS, help="do_bench_cudagraph rep per timing")
    parser.add_argument("--out", default="polynorm_results.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/polynorm.py needs a CUDA GPU")
    globals()["BENCH_REP_MS"] = args.rep_ms
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if "liger" in args.impls and _liger() is None:
        print("liger_kernel is not importable: the liger baseline is skipped")
        args.impls = [i for i in args.impls if i != "liger"]
    dtype = getattr(torch, args.dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    device = torch.cuda.get_device_name()
    copies = copy_bandwidth()
    copy_bw = max(copies.values())
    liger_version = None
    if "liger" in args.impls:
        from importlib.metadata import version
        liger_version = version("liger-kernel")
    print(f"device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); triton {triton.__version__}; "
          f"driver {driver_version()}; liger-kernel {liger_version}; dtype {args.dtype}")
    print("device-to-device copy of 1 GiB, read+write counted (TB/s):",
          {k: round(v / 1e12, 3) for k, v in copies.items()})
    results = {"device": device, "torch": torch.__version__, "triton": triton.__version__, "dtype": args.dtype,
               "cuda": torch.version.cuda, "driver": driver_version(), "liger_kernel": liger_version,
               "impls": list(args.impls),
               "copy_bandwidth_Bps": copy_bw, "copies_Bps": copies, "command": " ".join(sys.argv), "checks": {},
               "rows": []}
    if args.sweep:
        results["sweep"] = {}
        for hidden in args.hidden:
            sweep = sweep_launch_configs(2 * 4096, hidden, dtype)
            results["sweep"][hidden] = sweep
            for op in OPS:
                for d, idx in (("fwd", 0), ("bwd", 1)):
                    ranked = sorted(sweep, key=lambda c: sweep[c][op][idx])
                    floor = min_bytes(op, d, 2 * 4096 * hidden, elem) / copy_bw * 1e3
                    print(f"hidden {hidden} {op} {d}: best " + ", ".join(
                        f"{c} {sweep[c][op][idx]:.3f} ms" for c in ranked[:3]) + f"; copy-speed floor {floor:.3f} ms")
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        return
    for hidden in args.hidden:
        results["checks"][f"hidden {hidden}, 2 x 1024 rows"] = check_against_float64(2048, hidden, dtype)
        if "liger" in args.impls:
            results["checks"][f"liger, hidden {hidden}, 2 x 1024 rows"] = check_liger_against_float64(2048, hidden,
                                                                                                    dtype)
    results["checks"]["hidden 5000 (not a power of two), 333 rows"] = check_against_float64(333, 5000, dtype)
    print("max relative error vs float64:", json.dumps(results["checks"], indent=1))

    compiled: dict = {}
    start = time.time()
    # (op, hidden) outermost: one fresh compile per op and width, re-specialized (dynamic=False) per row count
    for hidden, op in itertools.product(args.hidden, OPS):
        for seq, batch in itertools.product(args.seq, args.batch):
            rows = batch * seq
            row = {"op": op, "hidden": hidden, "seq": seq, "batch": batch}
            for impl in args.impls:
                try:
                    row[f"{impl}_fwd_ms"], row[f"{impl}_bwd_ms"] = time_one(op, impl, rows, hidden, dtype, compiled)
                except torch.OutOfMemoryError:
                    row[f"{impl}_fwd_ms"] = row[f"{impl}_bwd_ms"] = None
                torch.cuda.empty_cache()
            for d in ("fwd", "bwd"):
                row[f"triton_{d}_TBps"] = min_bytes(op, d, rows * hidden, elem) / (row[f"triton_{d}_ms"] * 1e-3) / 1e12
                row[f"triton_{d}_copy_frac"] = row[f"triton_{d}_TBps"] * 1e12 / copy_bw
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    results["seconds"] = time.time() - start

    summary = []
    for op in OPS:
        rows = [r for r in results["rows"] if r["op"] == op]
        line = {"op": op}
        for d, base in itertools.product(("fwd", "bwd"), [i for i in ("naive", "compile", "liger")
                                                          if i in args.impls]):
            ratios = [r[f"{base}_{d}_ms"] / r[f"triton_{d}_ms"] for r in rows if r.get(f"{base}_{d}_ms")]
            line[f"{d} vs {base}"] = geomean(ratios) if ratios else None
        for d, h in itertools.product(("fwd", "bwd"), (16384, 8192)):
            big = [r[f"triton_{d}_copy_frac"] for r in rows if r["hidden"] == h]
            line[f"{d} copy frac @{h} (min/geomean)"] = (min(big), geomean(big)) if big else None
        summary.append(line)
    results["summary"] = summary
    print("\n| op | " + " | ".join(k for k in summary[0] if k != "op") + " |")
    for line in summary:
        cells = []
        for k, v in line.items():
            if k == "op":
                continue
            cells.append("-" if v is None else (f"{v[0]:.3f} / {v[1]:.3f}" if isinstance(v, tuple) else f"{v:.2f}x"))
        print(f"| {line['op']} | " + " | ".join(cells) + " |")

    kernel_only = {h: kernel_times(2 * 4096, h, dtype) for h in args.hidden}
    results["kernel_only_ms_2x4096"] = kernel_only
    for h, times in kernel_only.items():
        for op, (f, bw) in times.items():
            print(f"kernel only, hidden {h}, 2 x 4096 rows, {op}: fwd {f:.3f} ms "
                  f"({min_bytes(op, 'fwd', 8192 * h, elem) / f / 1e9 / copy_bw * 1e12:.3f} of copy), bwd {bw:.3f} ms "
                  f"({min_bytes(op, 'bwd', 8192 * h, elem) / bw / 1e9 / copy_bw * 1e12:.3f} of copy)")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
