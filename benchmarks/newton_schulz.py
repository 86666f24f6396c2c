"""Newton-Schulz over one Motif-2-12.7B layer's seven block matrices: motif_titan's paths against Dion's, side by side.

    python benchmarks/newton_schulz.py --dion PATH/TO/dion/newton_schulz_triton.py --out ns.json

Dion (github.com/microsoft/dion, ``dion/newton_schulz_triton.py``) is loaded from the file given, never vendored:
it is a baseline only. Variants, all bf16, 5 iterations, inputs fp32 gradients like Muon's momentum:
- ``torch``: motif_titan's plain path (three torch matmuls per iteration), ``backend="torch"``;
- ``triton``: motif_titan's symmetric-product kernels (``motif_titan.kernels.newton_schulz_triton``);
- ``dion_lines``: Dion's ``ns_line_1`` / ``ns_line_2`` triangle kernels + ``torch.addmm``, with the same (keller)
  coefficients, i.e. Dion's ``newton_schulz_triton`` with its constants swapped for ours;
- ``dion`` and ``triton_motif`` / ``torch_motif``: Dion's own ``newton_schulz_triton`` (its built-in table is
  Motif's five triples) against ours with ``ns_coefficients = "motif"``.
First correctness: per shape, each variant against the torch path of the same coefficients (max |diff|, relative
Frobenius difference, bit-equal fraction). Then timing: median GPU time (``triton.testing.do_bench``, warm,
autotuned first) of the whole layer, twice in alternating order, plus each matrix alone, and a dense bf16 8192^3
matmul of the same run. Prints a table last.
"""

import argparse
import importlib.util
import json
import sys

import torch
import triton
import triton.testing

from motif_titan.optim.newton_schulz import (EPS, iteration_coefficients, newton_schulz_flops,
                                             zeropower_via_newton_schulz)

from environment import driver_version  # benchmarks/environment.py

LAYER_SHAPES = [(5120, 4096), (2048, 4096), (2048, 4096), (4096, 8192), (16384, 4096), (4096, 16384), (16384, 4096)]
NAMES = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def load_dion(path):
    spec = importlib.util.spec_from_file_location("dion_newton_schulz_triton", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dion_lines(dion, coefficients):
    """Dion's triangle kernels for lines 1 and 2, torch.addmm for line 3 (as in Dion's newton_schulz_triton)."""
    @torch.no_grad()
    def run(g):
        x = g.to(torch.bfloat16)
        transposed = g.size(0) > g.size(1)
        if transposed:
            x = x.T
        x = x / x.norm().clamp(min=EPS)
        x = x.contiguous()
        a_buf = torch.empty(x.size(0), x.size(0), device=x.device, dtype=x.dtype)
        b_buf = torch.empty_like(a_buf)
        for a, b, c in coefficients:
            dion.ns_line_1(x, out=a_buf)
            dion.ns_line_2(a_buf, alpha=c, beta=b, out=b_buf)
            x = torch.addmm(x, b_buf, x, beta=a)
        return x.T if transposed else x
    return run


def diff(got, want):
    g, w = got.float(), want.float()
    return {"max_abs": (g - w).abs().max().item(), "rel_fro": ((g - w).norm() / w.norm()).item(),
            "bit_equal_fraction": (got == want).float().mean().item()}


def bench(fn, rep=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def matmul_rate():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192 ** 3 / (bench(lambda: a @ b, rep=100) * 1e-3) / 1e12


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dion", required=True, help="path of Dion's dion/newton_schulz_triton.py")
    parser.add_argument("--dion-commit", default=None)
    parser.add_argument("--out", default="newton_schulz_results.json")
    args = parser.parse_args()
    dion = load_dion(args.dion)
    keller, motif = iteration_coefficients("keller", 5), iteration_coefficients("motif", 5)
    variants = {
        "torch": lambda g: zeropower_via_newton_schulz(g, keller, backend="torch"),
        "triton": lambda g: zeropower_via_newton_schulz(g, keller, backend="triton"),
        "dion_lines": dion_lines(dion, keller),
        "torch_motif": lambda g: zeropower_via_newton_schulz(g, motif, backend="torch"),
        "triton_motif": lambda g: zeropower_via_newton_schulz(g, motif, backend="triton"),
        "dion": lambda g: dion.newton_schulz_triton(g, epsilon=EPS),
    }
    reference = {"triton": "torch", "dion_lines": "torch", "triton_motif": "torch_motif", "dion": "torch_motif"}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
               "cuda": torch.version.cuda, "driver": driver_version(), "dion_file": args.dion,
               "dion_commit": args.dion_commit, "command": " ".join(sys.argv), "shapes": LAYER_SHAPES}
    print(json.dumps({k: results[k] for k in ("device", "torch", "triton", "cuda", "driver")}), flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    mats = [torch.randn(s, device="cuda", generator=gen) for s in LAYER_SHAPES]

    # correctness (also the autotuning of every kernel)
    checks = {}
    for name, shape, g in zip(NAMES, LAYER_SHAPES, mats):
        outs = {v: fn(g) for v, fn in variants.items()}
        checks[name] = {v: diff(outs[v], outs[ref]) for v, ref in reference.items()}
        # and both bf16 paths against a float32 iteration of the same coefficients (how far rounding takes each)
        x = g.float()
        t = x.shape[0] > x.shape[1]
        x = x.T if t else x
        x = x / x.norm()
        torch.backends.cuda.matmul.allow_tf32 = False
        for a, b, c in keller:
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if t else x
        checks[name]["torch_vs_fp32"] = diff(outs["torch"], x)
        checks[name]["triton_vs_fp32"] = diff(outs["triton"], x)
        checks[name]["dion_lines_vs_fp32"] = diff(outs["dion_lines"], x)
        print(name, shape, json.dumps({k: {kk: round(vv, 6) for kk, vv in v.items()}
                                       for k, v in checks[name].items()}), flush=True)
        del outs
    results["checks"] = checks

    layer = {v: (lambda fn=fn: [fn(g) for g in mats]) for v, fn in variants.items()}
    mm_before = matmul_rate()
    times = {v: [] for v in variants}
    for order in (list(variants), list(variants)[::-1]):
        for v in order:
            times[v].append(bench(layer[v]))
    mm_after = matmul_rate()
    per_matrix = {v: {name: bench(lambda fn=fn, g=g: fn(g), rep=100) for name, g in zip(NAMES, mats)}
                  for v, fn in variants.items()}
    flops = sum(newton_schulz_flops(*s, 5) for s in LAYER_SHAPES)
    results.update(layer_ms=times, per_matrix_ms=per_matrix, matmul_TFLOPs=[mm_before, mm_after],
                   layer_ns_flops=flops)

    # one profiled layer of each of the three keller variants: GPU time by kernel
    prof_summary = {}
    for v in ("torch", "triton", "dion_lines"):
        layer[v]()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            layer[v]()
            torch.cuda.synchronize()
        rows = sorted(((e.key, e.device_time_total / 1e3, e.count) for e in prof.key_averages()
                       if e.device_time_total > 0), key=lambda r: -r[1])
        prof_summary[v] = [{"kernel": k[:90], "ms": round(ms, 3), "calls": n} for k, ms, n in rows[:8]]
    results["profile_one_layer"] = prof_summary
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)

    print(json.dumps(prof_summary, indent=1))
    print(f"\ndense bf16 8192^3 matmul: {mm_before:.0f} / {mm_after:.0f} TFLOP/s (before / after the layer timings)")
    print("| variant | layer ms (run 1 / run 2) | TFLOP/s (NS FLOPs) | vs torch | vs dion_lines | vs dion |")
    print("|---|---|---|---|---|---|")
    med = {v: min(t) for v, t in times.items()}
    for v, t in times.items():
        base_t = "torch" if "motif" not in v and v != "dion" else "torch_motif"
        print(f"| {v} | {t[0]:.2f} / {t[1]:.2f} | {flops / (med[v] * 1e-3) / 1e12:.0f} | "
              f"{med[base_t] / med[v]:.3f}x | {med['dion_lines'] / med[v]:.3f}x | {med['dion'] / med[v]:.3f}x |")
    print("\n| matrix | " + " | ".join(variants) + " |")
    for name in NAMES:
        print(f"| {name} | " + " | ".join(f"{per_matrix[v][name]:.3f}" for v in variants) + " |")


if __name__ == "__main__":
    main()
