"""Newton-Schulz over one Motif-2-12.7B layer's seven block matrices: motif_titan's paths against Dion's, side by side.

    python benchmarks/newton_schulz.py --dion PATH/TO/dion/newton_schulz_triton.py --out ns.json

Dion (github.com/microsoft/dion, ``dion/newton_schulz_triton.py``) is loaded from the file given, never vendored:
it is a baseline only. Variants, all bf16, 5 iterations, inputs fp32 gradients like Muon's momentum:
- ``torch``: motif_titan's plain path (three torch matmuls per iteration), ``backend="torch"``;
- ``triton``: motif_titan's Triton path (``motif_titan.kernels.newton_schulz_triton.newton_schulz_triton``),
  ``backend="triton"`` on every matrix, replayed from its per-shape CUDA graphs (``CUDA_GRAPHS`` on, here for
  every variant of ours but the next one);
- ``triton_eager``: the same launched kernel by kernel (``CUDA_GRAPHS = False``, the package default);
- ``auto``: ``backend="auto"``, what Muon runs (Triton where the short side is >= TRITON_MIN_DIM, torch elsewhere);
- ``gram``: ``backend="gram"`` (the Gram iteration where the long side is >= GRAM_MIN_ASPECT x the short one, the
  Triton path on the other Triton shapes, torch on wk, wv); ``gram_all``: the Gram iteration on all seven;
- ``dion_lines``: Dion's ``ns_line_1`` / ``ns_line_2`` triangle kernels + ``torch.addmm``, with the same (keller)
  coefficients, i.e. Dion's ``newton_schulz_triton`` with its constants swapped for ours;
- ``dion`` and ``triton_motif`` / ``gram_motif`` / ``torch_motif``: Dion's own ``newton_schulz_triton`` (its
  built-in table is Motif's five triples) against ours with ``ns_coefficients = "motif"``;
- ``triton_polar`` / ``torch_polar``: the Polar Express table (``newton_schulz.POLAR_EXPRESS``; checked, not timed).
First every Triton configuration either side autotunes over is compiled in parallel worker processes (into Triton's
disk cache; the autotuners then only time them). Then correctness: per shape, each variant against the torch path
of the same coefficients (max |diff|, relative Frobenius difference, bit-equal fraction) and against a float32
iteration, and every one of our configurations alone against cuBLAS on the two symmetric products. Then each
product alone (ours against Dion's and cuBLAS on the same operands, with the configurations each autotuner picked),
then timing of the whole layer, twice in alternating order, two ways for every variant: wall time per call
(``triton.testing.do_bench``: what Muon sees, CPU launches included) and the replay time of a CUDA graph of the
layer (``triton.testing.do_bench_cudagraph``: GPU time alone; our own graphs are off inside it, so it captures the
same kernels); each matrix alone, a dense bf16 8192^3 matmul of the same run, a profile of one layer. Prints a
table last.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import triton
import triton.testing

from motif_titan.kernels import newton_schulz_triton as nst
from motif_titan.optim.newton_schulz import (EPS, POLAR_EXPRESS, iteration_coefficients, newton_schulz_flops,
                                             zeropower_via_newton_schulz)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from environment import driver_version  # noqa: E402  benchmarks/environment.py

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


# ---- parallel compilation: every worker runs the same launches with the autotuners swapped for shims that compile
# their share of the configurations without running anything

class _CompileOnly:
    def __init__(self, autotuner, counter, worker, workers):
        self.at, self.counter, self.worker, self.workers = autotuner, counter, worker, workers
        self.best_config = autotuner.configs[0]

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            for cfg in self.at.configs:
                self.counter[0] += 1
                if self.counter[0] % self.workers == self.worker:
                    try:
                        self.at.fn.warmup(*args, grid=(1,), **kwargs, **cfg.all_kwargs())
                    except Exception as e:  # out of resources etc.: the autotuner will meet it again and skip it
                        self.counter.append(f"{cfg}: {type(e).__name__}")
        return launch


def _compile_worker(job):
    worker, workers, dion_path = job
    dion = load_dion(dion_path)
    counter = [0]
    for mod, name in ((nst, "_tuned"), (nst, "_tuned_update"), (dion, "ns_line_1_kernel"),
                      (dion, "ns_line_2_kernel")):
        setattr(mod, name, _CompileOnly(getattr(mod, name), counter, worker, workers))

    class NoCache(dict):  # every launch reaches the shims
        def __setitem__(self, key, value):
            pass

    nst._picked = NoCache()
    nst.THIRD_PRODUCT = "triton"
    nst.CUDA_GRAPHS = False
    keller = iteration_coefficients("keller", 3)
    for shape in ((512, 256), (256, 512)):
        g = torch.randn(shape, device="cuda")
        nst.newton_schulz_triton(g, keller)
        nst.newton_schulz_triton(g, keller, gram=True)
        dion_lines(dion, keller)(g)
    torch.cuda.synchronize()
    return counter[1:]


def precompile(dion_path, workers):
    import multiprocessing as mp
    t0 = time.time()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        errors = [e for errs in pool.map(_compile_worker, [(w, workers, dion_path) for w in range(workers)])
                  for e in errs]
    return {"seconds": round(time.time() - t0, 1), "workers": workers, "errors": errors[:20]}


# ---- autotuning log: each autotuner's timings of every configuration, per key

def log_autotuning(autotuner, name, log):
    original = autotuner.run

    def run(*args, **kwargs):
        before = set(autotuner.cache)
        out = original(*args, **kwargs)
        for key in set(autotuner.cache) - before:
            timings = sorted(((t[0] if isinstance(t, (list, tuple)) else t, str(c))
                              for c, t in autotuner.configs_timings.items()), key=lambda r: r[0])
            log.setdefault(name, {})[str(key)] = {"best": str(autotuner.cache[key]),
                                                  "top": [(round(t, 4), c) for t, c in timings[:6]],
                                                  "bench_s": round(getattr(autotuner, "bench_time", 0), 2)}
        return out

    autotuner.run = run


def diff(got, want):
    g, w = got.float(), want.float()
    return {"max_abs": (g - w).abs().max().item(), "rel_fro": ((g - w).norm() / w.norm()).item(),
            "bit_equal_fraction": (got == want).float().mean().item()}


def bench(fn, rep=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def bench_graph(fn, rep=200):
    """Median replay time of a CUDA graph of fn (GPU time alone). Our per-shape graphs are off meanwhile: under a
    capture our path runs its kernels eagerly anyway, and the warm-up calls would capture graphs on a new stream."""
    on, nst.CUDA_GRAPHS = nst.CUDA_GRAPHS, False
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median")
    finally:
        nst.CUDA_GRAPHS = on


def matmul_rate():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192 ** 3 / (bench(lambda: a @ b, rep=100) * 1e-3) / 1e12


def _label(cfg):
    return (f"{cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}x{cfg.kwargs['BLOCK_K']} w{cfg.num_warps} "
            f"s{cfg.num_stages}")


def scaled_inputs(mats):
    out = []
    for g in mats:
        x = g.bfloat16()
        x = x.T if g.size(0) > g.size(1) else x
        out.append(nst.scaled(x, x.norm()))
    return out


def config_checks(xs):
    """Every configuration of ours alone on each of the two symmetric products, against cuBLAS (torch) on the same
    operands: max |diff| and the fraction of bit-equal elements."""
    a_, b_, c_ = iteration_coefficients("keller", 1)[0]
    rows = {}

    def check(label, fn, ref):
        try:
            d = diff(fn(), ref)
            rows[label] = {"max_abs": d["max_abs"], "bit_equal": round(d["bit_equal_fraction"], 6)}
        except Exception as e:  # out of resources: recorded (the autotuner skips such a configuration too)
            rows[label] = {"error": f"{type(e).__name__}: {e}"[:200]}

    for name, x in zip(NAMES, xs):
        if name in ("wv", "w2", "w3"):  # same shapes as wk, w1
            continue
        gram_ref = x @ x.T
        upd_ref = torch.addmm(gram_ref, gram_ref, gram_ref, beta=b_, alpha=c_)
        for cfg in nst._tuned.configs:
            check(f"{name} line1 {_label(cfg)}", lambda: nst.sym_product(x, config=cfg), gram_ref)
            check(f"{name} line2 {_label(cfg)}",
                  lambda: nst.sym_product(gram_ref, alpha=c_, beta=b_, d=gram_ref, config=cfg), upd_ref)
        torch.cuda.synchronize()
    return rows


def product_timings(dion, xs):
    """Each product alone, ours against Dion's, on the row-major scaled X of each shape; and the scaling."""
    a, b, c = iteration_coefficients("keller", 1)[0]
    rows = {}
    for name, x in zip(NAMES, xs):
        if name in ("wv", "w2", "w3"):
            continue
        m = x.shape[0]
        gram = torch.empty(m, m, device="cuda", dtype=torch.bfloat16)
        upd = torch.empty_like(gram)
        nxt = torch.empty_like(x)
        r = {"line1_ours": bench(lambda: nst.sym_product(x, out=gram), rep=50),
             "line1_dion": bench(lambda: dion.ns_line_1(x, out=gram), rep=50)}
        r["line2_ours"] = bench(lambda: nst.sym_product(gram, out=upd, alpha=c, beta=b, d=gram), rep=50)
        r["line2_dion"] = bench(lambda: dion.ns_line_2(gram, alpha=c, beta=b, out=upd), rep=50)
        r["line3_ours"] = bench(lambda: nst.update_product(upd, x, a, out=nxt), rep=50)
        r["line3_addmm"] = bench(lambda: torch.addmm(x, upd, x, beta=a), rep=50)
        r["line3_addmm_inplace"] = bench(lambda: nxt.addmm_(upd, x, beta=a), rep=50)
        r["copy"] = bench(lambda: nxt.copy_(x), rep=50)
        key = f"{name} {tuple(x.shape)}"
        rows[key] = {k: round(v, 4) for k, v in r.items()}
        print(key, json.dumps(rows[key]), flush=True)
    # the scaling of a tall gradient (16384 x 4096): ours (one pass, row-major out) against torch's division on the
    # transposed view, and that plus Dion's contiguous copy
    x = torch.randn(16384, 4096, device="cuda").bfloat16().T
    n = x.norm()
    rows["scale 16384x4096 transposed"] = {
        "ours": round(bench(lambda: nst.scaled(x, n), rep=50), 4),
        "torch_div": round(bench(lambda: x / n, rep=50), 4),
        "torch_div_contiguous": round(bench(lambda: (x / n).contiguous(), rep=50), 4)}
    print("scale", json.dumps(rows["scale 16384x4096 transposed"]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dion", required=True, help="path of Dion's dion/newton_schulz_triton.py")
    parser.add_argument("--dion-commit", default=None)
    parser.add_argument("--out", default="newton_schulz_results.json")
    parser.add_argument("--compile-workers", type=int, default=min(14, os.cpu_count() or 1),
                        help="processes compiling the autotuning configurations first (0: none)")
    args = parser.parse_args()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
               "cuda": torch.version.cuda, "driver": driver_version(), "dion_file": args.dion,
               "dion_commit": args.dion_commit, "command": " ".join(sys.argv), "shapes": LAYER_SHAPES,
               "our_configs": {"sym_product": nst.CONFIGS, "update_product": nst.UPDATE_CONFIGS}}
    print(json.dumps({k: results[k] for k in ("device", "torch", "triton", "cuda", "driver")}), flush=True)

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    if args.compile_workers > 0:
        try:
            results["precompile"] = precompile(args.dion, args.compile_workers)
        except Exception as e:  # the autotuners compile on their own then, one by one
            results["precompile"] = {"failed": f"{type(e).__name__}: {e}"[:500]}
        print("precompile", json.dumps(results["precompile"]), flush=True)
    dion = load_dion(args.dion)
    tuning = {}
    for at, name in ((nst._tuned, "ours sym_product"), (nst._tuned_update, "ours update_product"),
                     (dion.ns_line_1_kernel, "dion ns_line_1"), (dion.ns_line_2_kernel, "dion ns_line_2")):
        log_autotuning(at, name, tuning)
    results["autotuning"] = tuning
    keller, motif = iteration_coefficients("keller", 5), iteration_coefficients("motif", 5)
    polar = list(POLAR_EXPRESS)

    nst.CUDA_GRAPHS = True  # our variants replay their per-shape graphs, but triton_eager

    def eager(fn):
        def run(g):
            nst.CUDA_GRAPHS = False
            try:
                return fn(g)
            finally:
                nst.CUDA_GRAPHS = True
        return run

    variants = {
        "torch": lambda g: zeropower_via_newton_schulz(g, keller, backend="torch"),
        "triton": lambda g: zeropower_via_newton_schulz(g, keller, backend="triton"),
        "triton_eager": eager(lambda g: zeropower_via_newton_schulz(g, keller, backend="triton")),
        "auto": lambda g: zeropower_via_newton_schulz(g, keller, backend="auto"),
        "gram": lambda g: zeropower_via_newton_schulz(g, keller, backend="gram"),
        "gram_all": lambda g: nst.newton_schulz_triton(g, keller, EPS, gram=True),
        "dion_lines": dion_lines(dion, keller),
        "torch_motif": lambda g: zeropower_via_newton_schulz(g, motif, backend="torch"),
        "triton_motif": lambda g: zeropower_via_newton_schulz(g, motif, backend="triton"),
        "gram_motif": lambda g: zeropower_via_newton_schulz(g, motif, backend="gram"),
        "dion": lambda g: dion.newton_schulz_triton(g, epsilon=EPS),
    }
    checked_only = {
        "torch_polar": lambda g: zeropower_via_newton_schulz(g, polar, backend="torch"),
        "triton_polar": lambda g: zeropower_via_newton_schulz(g, polar, backend="triton"),
    }
    reference = {"triton": "torch", "triton_eager": "torch", "auto": "torch", "gram": "torch",
                 "gram_all": "torch", "dion_lines": "torch", "triton_motif": "torch_motif",
                 "gram_motif": "torch_motif", "dion": "torch_motif", "triton_polar": "torch_polar"}
    gen = torch.Generator(device="cuda").manual_seed(0)
    mats = [torch.randn(s, device="cuda", generator=gen) for s in LAYER_SHAPES]

    # correctness (also the autotuning of every kernel)
    t0 = time.time()
    checks = {}
    for name, shape, g in zip(NAMES, LAYER_SHAPES, mats):
        outs = {v: fn(g) for v, fn in {**variants, **checked_only}.items()}
        outs["triton_second_call"] = variants["triton"](g)  # replayed from the graph captured now
        outs["gram_all_second_call"] = variants["gram_all"](g)
        checks[name] = {v: diff(outs[v], outs[ref]) for v, ref in reference.items()}
        checks[name]["triton_graph_vs_eager"] = diff(outs["triton_second_call"], outs["triton_eager"])
        checks[name]["gram_graph_vs_first_call"] = diff(outs["gram_all_second_call"], outs["gram_all"])
        # and the bf16 paths against a float32 iteration of the same coefficients (how far rounding takes each)
        x = g.float()
        t = x.shape[0] > x.shape[1]
        x = x.T if t else x
        x = x / x.norm()
        torch.backends.cuda.matmul.allow_tf32 = False
        for a, b, c in keller:
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if t else x
        for v in ("torch", "triton", "gram_all", "dion_lines"):
            checks[name][f"{v}_vs_fp32"] = diff(outs[v], x)
        sv = torch.linalg.svdvals(outs["triton_polar"].float())
        checks[name]["polar_singular_values"] = {"min": sv.min().item(), "max": sv.max().item()}
        print(name, shape, json.dumps({k: {kk: round(vv, 6) for kk, vv in v.items()}
                                       for k, v in checks[name].items()}), flush=True)
        del outs
    results["checks"] = checks
    results["checks_and_autotuning_s"] = round(time.time() - t0, 1)
    save()

    xs = scaled_inputs(mats)
    results["config_checks"] = config_checks(xs)
    bad = {k: v for k, v in results["config_checks"].items()
           if "error" in v or v["bit_equal"] < 0.999}
    print("configurations off cuBLAS by more than 0.1% of elements (or failing):", json.dumps(bad)[:1500], flush=True)
    save()
    results["products_ms"] = product_timings(dion, xs)
    del xs
    results["chosen_configs"] = {
        "ours": {str(k): str(v) for at in (nst._tuned, nst._tuned_update) for k, v in at.cache.items()},
        "dion_line1": {str(k): str(v) for k, v in dion.ns_line_1_kernel.cache.items()},
        "dion_line2": {str(k): str(v) for k, v in dion.ns_line_2_kernel.cache.items()}}
    save()

    layer = {v: (lambda fn=fn: [fn(g) for g in mats]) for v, fn in variants.items()}
    mm_before = matmul_rate()
    times = {v: [] for v in variants}
    graph_times = {v: [] for v in variants}
    for order in (list(variants), list(variants)[::-1]):
        for v in order:
            times[v].append(bench(layer[v], rep=300))
            try:
                graph_times[v].append(bench_graph(layer[v], rep=200))
            except Exception as e:  # recorded; the wall times stand
                graph_times[v].append(f"{type(e).__name__}: {e}"[:200])
            print(v, round(times[v][-1], 3), graph_times[v][-1], flush=True)
    mm_after = matmul_rate()
    flops = sum(newton_schulz_flops(*s, 5) for s in LAYER_SHAPES)
    results.update(layer_ms=times, layer_graph_replay_ms=graph_times, matmul_TFLOPs=[mm_before, mm_after],
                   layer_ns_flops=flops)
    save()
    per_matrix = {v: {name: bench(lambda fn=fn, g=g: fn(g), rep=60) for name, g in zip(NAMES, mats)}
                  for v, fn in variants.items() if v in ("torch", "triton_eager", "triton", "gram_all", "dion_lines",
                                                          "dion")}
    results["per_matrix_ms"] = per_matrix
    save()

    # one profiled layer of each of the three keller variants: GPU time by kernel
    prof_summary = {}
    for v in ("torch", "triton", "gram", "dion_lines"):
        layer[v]()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            layer[v]()
            torch.cuda.synchronize()
        rows = sorted(((e.key, e.device_time_total / 1e3, e.count) for e in prof.key_averages()
                       if e.device_time_total > 0), key=lambda r: -r[1])
        prof_summary[v] = {"total_ms": round(sum(r[1] for r in rows), 3),
                           "kernels": [{"kernel": k[:90], "ms": round(ms, 3), "calls": n} for k, ms, n in rows[:10]]}
    results["profile_one_layer"] = prof_summary
    save()

    for name, keys in tuning.items():  # the autotuners' picks, shortest first
        for key, t in keys.items():
            print(f"{name} {key[:60]}: best {t['top'][0] if t['top'] else None}")
    for v, p in prof_summary.items():
        print(f"profile {v}: {p['total_ms']} ms GPU;", "; ".join(f"{k['kernel'][:36]} {k['ms']} ms x{k['calls']}"
                                                           for k in p["kernels"][:6]))
    print(f"\ndense bf16 8192^3 matmul: {mm_before:.0f} / {mm_after:.0f} TFLOP/s (before / after the layer timings)")
    print("| variant | wall ms (run 1 / run 2) | graph replay ms (run 1 / run 2) | vs torch (wall / graph) | "
          "vs dion_lines (wall / graph) | vs dion (wall / graph) |")
    print("|---|---|---|---|---|---|")
    med = {v: min(t) for v, t in times.items()}
    gmed = {v: min([x for x in t if isinstance(x, float)], default=float("nan")) for v, t in graph_times.items()}

    def fmt(t):
        return " / ".join(f"{x:.2f}" if isinstance(x, float) else "failed" for x in t)

    for v, t in times.items():
        base_t = "torch" if "motif" not in v and v != "dion" else "torch_motif"
        print(f"| {v} | {fmt(t)} | {fmt(graph_times[v])} | {med[base_t] / med[v]:.3f}x / "
              f"{gmed[base_t] / gmed[v]:.3f}x | {med['dion_lines'] / med[v]:.3f}x / "
              f"{gmed['dion_lines'] / gmed[v]:.3f}x | {med['dion'] / med[v]:.3f}x / {gmed['dion'] / gmed[v]:.3f}x |")
    print("\n| matrix | " + " | ".join(per_matrix) + " |")
    for name in NAMES:
        print(f"| {name} | " + " | ".join(f"{per_matrix[v][name]:.3f}" for v in per_matrix) + " |")
    print("\nbit-equal fraction vs torch path:", {n: {v: round(c[v]["bit_equal_fraction"], 6) for v in reference}
                                                  for n, c in checks.items()})


if __name__ == "__main__":
    main()
