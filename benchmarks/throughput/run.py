"""End-to-end training throughput of motif2 against TorchTitan's llama3 of equal parameter count, in one run.

    python benchmarks/throughput/run.py --gpus 1 --out throughput.json             # one GPU: bf16, FP8, kernels
    python benchmarks/throughput/run.py --gpus 2 --variants motif2_fsdp2 ... --out ...
    python benchmarks/throughput/run.py --profile --variants motif2_bf16 llama3_bf16 --out breakdown.json

Each variant is TorchTitan's own trainer (``torchrun -m torchtitan.train``) on ``base.toml`` plus a few CLI overrides,
for ``--steps`` steps; the reported tokens/s per GPU, TFLOPS, MFU and peak reserved memory are the medians of the
values TorchTitan logs every 5 steps, skipping the first 10 steps (compilation, warm-up). MFU uses each model's own
FLOPs per token (motif2's counts GDA's 2*head_dim values). Ratios are taken against the variants named by
``--baseline`` in the same run.

``--profile`` instead traces the last step of each variant with TorchTitan's profiler and reports where its GPU
time goes, by kernel kind (``breakdown.py``); the profiled runs' speeds are not reported (profiling slows them).
The ``motif2_12.7B_8layers_*`` variants train 8 of the 12.7B's blocks (``motif2_slices.py``), 2 x 4096 tokens per
step, to show FP8 on the 12.7B's linear shapes. ``motif2_cp2_8k`` / ``motif2_fsdp2_8k`` (two GPUs) compare context
parallelism with FSDP on 8192-token rows.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from breakdown import format_table, summarize  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
LOG_LINE = re.compile(r"step:\s*(\d+).*?memory:\s*([0-9.]+)GiB.*?tps:\s*([0-9,]+).*?tflops:\s*([0-9.]+).*?mfu:\s*"
                      r"([0-9.]+)%")
FP8_ROWWISE_GW_HP = ["--model.converters", "quantize.linear.float8_auto_filter",
                     "--quantize.linear.float8.recipe_name", "rowwise_with_gw_hp",
                     "--quantize.linear.float8.filter_fqns", "output"]
FP8_ROWWISE = ["--model.converters", "quantize.linear.float8_auto_filter", "--quantize.linear.float8.recipe_name",
               "rowwise", "--quantize.linear.float8.filter_fqns", "output"]
FP8_ROWWISE_UNFILTERED = ["--model.converters", "quantize.linear.float8", "--quantize.linear.float8.recipe_name",
                          "rowwise", "--quantize.linear.float8.filter_fqns", "output"]
SLICES = ["--model.name", "motif2_slices", "--experimental.custom_import", "motif2_slices"]  # motif2_slices.py
SLICE_12_7B = SLICES + ["--model.flavor", "12.7B_8layers", "--training.local_batch_size", "2"]
LLAMA3 = ["--model.name", "llama3_baseline", "--model.flavor", "1B", "--experimental.custom_import",
          "llama3_baseline"]
VARIANTS = {
    "motif2_bf16": [],
    "motif2_fp8_rowwise_gw_hp": FP8_ROWWISE_GW_HP,
    "motif2_fp8_rowwise": FP8_ROWWISE,
    "motif2_fp8_rowwise_unfiltered": FP8_ROWWISE_UNFILTERED,
    "motif2_bf16_polynorm_torch": SLICES + ["--model.flavor", "1B_polynorm_torch"],
    "motif2_bf16_split_value": ["--model.gda_value_path", "split"],
    "motif2_bf16_joint_value": ["--model.gda_value_path", "joint"],
    "motif2_bf16_joint_noise_value": ["--model.gda_value_path", "joint_noise"],
    "motif2_12.7B_8layers_bf16": SLICE_12_7B,
    "motif2_12.7B_8layers_fp8_rowwise_gw_hp": SLICE_12_7B + FP8_ROWWISE_GW_HP,
    "motif2_12.7B_8layers_fp8_rowwise": SLICE_12_7B + FP8_ROWWISE,
    "motif2_12.7B_8layers_bf16_split_value": SLICE_12_7B + ["--model.gda_value_path", "split"],
    "motif2_12.7B_8layers_bf16_joint_value": SLICE_12_7B + ["--model.gda_value_path", "joint"],
    "motif2_12.7B_8layers_bf16_joint_noise_value": SLICE_12_7B + ["--model.gda_value_path", "joint_noise"],
    "llama3_bf16": LLAMA3,
    "llama3_fp8_rowwise_gw_hp": LLAMA3 + FP8_ROWWISE_GW_HP,
    # two GPUs
    "motif2_fsdp2": ["--parallelism.data_parallel_shard_degree", "2"],
    "llama3_fsdp2": LLAMA3 + ["--parallelism.data_parallel_shard_degree", "2"],
    "motif2_tp2": ["--parallelism.tensor_parallel_degree", "2", "--parallelism.data_parallel_shard_degree", "1"],
    "llama3_tp2": LLAMA3 + ["--parallelism.tensor_parallel_degree", "2",
                            "--parallelism.data_parallel_shard_degree", "1"],
    # two GPUs, 2 x 8192-token rows per step: each sequence split over both GPUs (CP) or each GPU its own (FSDP)
    "motif2_cp2_8k": ["--parallelism.context_parallel_degree", "2", "--parallelism.data_parallel_shard_degree", "1",
                      "--training.seq_len", "8192", "--training.local_batch_size", "2"],
    "motif2_fsdp2_8k": ["--parallelism.data_parallel_shard_degree", "2", "--training.seq_len", "8192",
                        "--training.local_batch_size", "1"],
}
ONE_GPU = ["motif2_bf16", "motif2_fp8_rowwise_gw_hp", "motif2_fp8_rowwise", "motif2_bf16_polynorm_torch",
           "llama3_bf16", "llama3_fp8_rowwise_gw_hp"]


def run_variant(name: str, gpus: int, steps: int, log_dir: Path, profile: bool = False) -> dict:
    dump = Path(f"/tmp/throughput_{name}")
    profiling = ["--profiling.enable_profiling", "--profiling.profile_freq", str(steps)] if profile else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "torchtitan.train", "--job.config_file", str(HERE / "base.toml"), "--training.steps", str(steps),
           "--job.dump_folder", str(dump), *VARIANTS[name], *profiling]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (log_dir / f"{name}{'_profile' if profile else ''}.log").write_text(log)
    if profile:
        trace = dump / "profile_traces" / f"iteration_{steps}" / "rank0_trace.json"
        if proc.returncode != 0 or not trace.is_file():
            return {"error": log[-3000:]}
        return {"breakdown": summarize(trace)}
    rows = [(int(s), float(m), float(t.replace(",", "")), float(tf), float(mfu))
            for s, m, t, tf, mfu in LOG_LINE.findall(log) if int(s) > 10]
    if proc.returncode != 0 or not rows:
        return {"error": log[-3000:]}
    return {"tps_per_gpu": statistics.median(r[2] for r in rows), "tflops": statistics.median(r[3] for r in rows),
            "mfu_pct": statistics.median(r[4] for r in rows), "memory_gib": max(r[1] for r in rows),
            "steps_measured": [r[0] for r in rows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=ONE_GPU)
    parser.add_argument("--baseline", default="motif2_bf16", help="variant the 'vs' column divides by")
    parser.add_argument("--out", default="throughput.json")
    parser.add_argument("--profile", action="store_true", help="kernel-time breakdown of the last step instead")
    args = parser.parse_args()
    log_dir = Path(args.out).resolve().parent / "throughput_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    import torch

    results = {"device": torch.cuda.get_device_name(), "gpus": args.gpus, "torch": torch.__version__,
               "variants": {}}
    for name in args.variants:
        results["variants"][name] = run_variant(name, args.gpus, args.steps, log_dir, args.profile)
        print(name, json.dumps({k: v for k, v in results["variants"][name].items() if k != "error"}) or "", flush=True)
        if "error" in results["variants"][name]:
            print(results["variants"][name]["error"][-1500:], flush=True)
    if args.profile:
        print(format_table({n: r["breakdown"] for n, r in results["variants"].items() if "breakdown" in r}))
        Path(args.out).write_text(json.dumps(results, indent=1))
        return
    base = results["variants"].get(args.baseline, {}).get("tps_per_gpu")
    print(f"| variant | tokens/s/GPU | vs {args.baseline} | TFLOPS | MFU % | peak reserved GiB |")
    for name, r in results["variants"].items():
        if "tps_per_gpu" in r:
            ratio = r["tps_per_gpu"] / base if base else float("nan")
            r[f"vs_{args.baseline}"] = ratio
            print(f"| {name} | {r['tps_per_gpu']:.0f} | {ratio:.3f} | {r['tflops']:.1f} | {r['mfu_pct']:.1f} | "
                  f"{r['memory_gib']:.1f} |")
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
