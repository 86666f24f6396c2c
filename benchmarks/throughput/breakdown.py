"""Where a training step's GPU time goes: GPU kernel time by kind, from a PyTorch profiler chrome trace.

    python benchmarks/throughput/breakdown.py TRACE.json [TRACE2.json ...] [--out breakdown.json]

TorchTitan writes the traces with ``--profiling.enable_profiling`` (``<dump>/profile_traces/iteration_N/
rankR_trace.json``; ``benchmarks/throughput/run.py --profile`` runs and summarizes them). A trace holds the active
step(s) only. Kernels are put in kinds by name (first match wins, see KINDS); the busy time is the union of kernel
intervals over all streams and the idle time is the rest of the span from the first kernel's start to the last
kernel's end (launch gaps, CPU-bound stretches, waits). Kind totals are summed kernel durations, so with
overlapping streams (NCCL beside compute) they can add up to more than the busy time.
"""

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

# (kind, pattern on the kernel name, case-insensitive); the first that matches wins
KINDS = [
    ("nccl (communication)", r"nccl"),
    ("attention backward", r"(flash|fmha|sdpa|attention).*(bwd|bprop|backward|cutlassB)|"
                           r"(bwd|bprop|backward).*(flash|fmha|sdpa)"),
    ("attention forward", r"flash|fmha|sdpa|attention"),
    ("gemm fp8", r"(gemm|nvjet|cutlass|xmma|cublas).*(e4m3|e5m2|f8|fp8)|(e4m3|e5m2|fp8).*(gemm|nvjet|cutlass)"),
    ("gemm bf16/fp32", r"gemm|nvjet|cutlass|xmma|cublas|ampere_|sm80_|sm90_"),
    ("PolyNorm (Triton kernel)", r"poly_norm"),
    ("optimizer (foreach / fused)", r"multi_tensor_apply|foreach|fused_adam"),
    ("compiled reductions (norms, loss, amax)", r"^triton_(red|per)_"),
    ("compiled pointwise (RoPE, casts, GDA combine, ...)", r"^triton_(poi|tem)_|^triton_"),
    ("cross-entropy / softmax (eager)", r"softmax|nll_loss|cross_entropy|log_softmax"),
    ("other eager kernels", r"."),
]
_COMPILED = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in KINDS]


def kind_of(name: str) -> str:
    for kind, pattern in _COMPILED:
        if pattern.search(name):
            return kind
    return "other eager kernels"


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def summarize(trace_path: str | Path, top: int = 12) -> dict:
    events = json.loads(Path(trace_path).read_text())["traceEvents"]
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        raise ValueError(f"{trace_path}: no GPU kernel events (was the trace taken on a GPU?)")
    steps = sorted({e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")})
    by_kind, by_name, count = defaultdict(float), defaultdict(float), defaultdict(int)
    for e in kernels:
        kind = "memcpy / memset" if e["cat"] != "kernel" else kind_of(e["name"])
        by_kind[kind] += e["dur"]
        by_name[e["name"]] += e["dur"]
        count[kind] += 1
    start = min(e["ts"] for e in kernels)
    stop = max(e["ts"] + e["dur"] for e in kernels)
    busy = _union_us([(e["ts"], e["ts"] + e["dur"]) for e in kernels])
    n_steps = max(1, len(steps))
    ms = lambda us: round(us / 1000 / n_steps, 3)  # noqa: E731 (per step)
    return {
        "trace": str(trace_path),
        "steps": steps,
        "per_step_ms": {
            "gpu_span": ms(stop - start),
            "gpu_busy": ms(busy),
            "gpu_idle": ms(stop - start - busy),
            "kinds": {k: ms(v) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        },
        "kernels_per_step": {k: count[k] // n_steps for k in sorted(count, key=lambda k: -by_kind[k])},
        "top_kernels_ms": {name[:160]: ms(us) for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]},
    }


def format_table(summaries: dict[str, dict]) -> str:
    """One markdown table: rows = kinds (and span / busy / idle), columns = the summarized runs (ms per step)."""
    names = list(summaries)
    kinds = []
    for s in summaries.values():
        kinds += [k for k in s["per_step_ms"]["kinds"] if k not in kinds]
    lines = ["| ms per step | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in ("gpu_span", "gpu_busy", "gpu_idle"):
        lines.append(f"| {row.replace('_', ' ')} | " + " | ".join(
            f"{summaries[n]['per_step_ms'][row]:.1f}" for n in names) + " |")
    for kind in kinds:
        lines.append(f"| {kind} | " + " | ".join(
            f"{summaries[n]['per_step_ms']['kinds'].get(kind, 0.0):.1f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    summaries = {Path(t).parent.parent.parent.name or t: summarize(t) for t in args.traces}
    print(format_table(summaries))
    if args.out:
        Path(args.out).write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    sys.exit(main())
