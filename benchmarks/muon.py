"""One Muon optimizer step over the Motif-2-12.7B block matrices, FSDP over N GPUs: Distributed vs Parallel Muon.

    torchrun --nproc_per_node=2 benchmarks/muon.py --layers 40 --out muon.json

Per layer the seven block matrices of the 12.7B flavor (wq 5120x4096, wk and wv 2048x4096, wo 4096x8192,
w1 and w3 16384x4096, w2 4096x16384) as fp32 parameters sharded Shard(0) over all ranks (FSDP), random gradients,
bf16 Newton-Schulz (5 steps). Modes: Distributed Muon (all-gather), Parallel no pipeline, pipelined chunk 32 in model
order, pipelined chunk 32 FLOP-sorted round-robin, pipelined chunk 32 LPT. Reported per mode: median step time,
peak extra memory during the step (max allocated minus allocated before it), and TFLOPS/GPU in the report's metric
(NS FLOPs of all matrices / time / GPUs). First a correctness check on 2 layers: every mode's update equals the
Distributed one bit for bit. Then single-GPU Newton-Schulz throughput against a dense bf16 matmul of the same run.
"""

import argparse
import json
import os
import statistics
import time
from collections import defaultdict

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from motif_titan.kernels import newton_schulz_triton as nst
from motif_titan.optim import newton_schulz
from motif_titan.optim.muon import Muon
from motif_titan.optim.newton_schulz import iteration_coefficients, newton_schulz_flops, zeropower_via_newton_schulz

LAYER_SHAPES = [(5120, 4096), (2048, 4096), (2048, 4096), (4096, 8192), (16384, 4096), (4096, 16384), (16384, 4096)]
MODES = {
    "distributed": dict(mode="distributed"),
    "parallel_no_pipeline": dict(mode="parallel", pipeline=False, assignment="flops_round_robin"),
    "parallel_pipelined_chunk32": dict(mode="parallel", pipeline=True, chunk_size=32, assignment="round_robin"),
    "parallel_pipelined_flops_sorted": dict(mode="parallel", pipeline=True, chunk_size=32,
                                            assignment="flops_round_robin"),
    "parallel_pipelined_lpt": dict(mode="parallel", pipeline=True, chunk_size=32, assignment="lpt"),
}


def make_params(layers: int, mesh, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    params = []
    for _ in range(layers):
        for shape in LAYER_SHAPES:
            full = torch.randn(shape, device="cuda", generator=gen) * 0.02
            p = torch.nn.Parameter(distribute_tensor(full, mesh, [Shard(0)]))
            p.grad = distribute_tensor(torch.randn(shape, device="cuda", generator=gen), mesh, [Shard(0)])
            params.append(p)
            del full
    return params


def timed_step(opt) -> tuple[float, int]:
    torch.cuda.synchronize()
    dist.barrier()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    opt.step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return elapsed, torch.cuda.max_memory_allocated() - before


def kernel_time_breakdown(opt) -> dict:
    """One profiled step: GPU kernel time (ms) by kind, summed over this rank's streams (communication kernels run
    beside compute, so the kinds add up to more than the step), and the idle gaps of the compute stream (where it
    waits: on communication, or on the CPU launching kernels)."""
    kinds = {"newton_schulz_gemm": ("gemm", "nvjet", "cutlass", "sm90", "xmma"), "nccl": ("nccl",),
             "fused_momentum": ("_momentum_kernel",), "fused_decay_update": ("_decay_update_kernel",),
             "copy": ("copy", "Memcpy", "memcpy")}
    totals = defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        opt.step()
        torch.cuda.synchronize()
    trace_path = f"/tmp/muon_trace_{dist.get_rank()}.json"
    prof.export_chrome_trace(trace_path)
    with open(trace_path) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "kernel"]
    os.remove(trace_path)
    by_stream = defaultdict(list)
    for e in events:
        kind = next((k for k, keys in kinds.items() if any(key in e["name"] for key in keys)), "other_elementwise")
        totals[kind] += e["dur"] / 1e3
        by_stream[e["args"].get("stream")].append(e)
    compute = max(by_stream.values(), key=lambda es: sum(e["dur"] for e in es if "nccl" not in e["name"]))
    compute.sort(key=lambda e: e["ts"])
    start, end = min(e["ts"] for e in events), max(e["ts"] + e["dur"] for e in events)
    gaps, cursor = [], start
    for e in compute:
        if e["ts"] > cursor:
            gaps.append((e["ts"] - cursor, cursor - start, e["name"][:60]))
        cursor = max(cursor, e["ts"] + e["dur"])
    gaps.append((end - cursor, cursor - start, "<end of step>"))
    result = {k: round(v, 2) for k, v in totals.items()}
    result["gpu_span_ms"] = round((end - start) / 1e3, 2)
    result["compute_stream_idle_ms"] = round(sum(g for g, _, _ in gaps) / 1e3, 2)
    result["largest_idle_gaps"] = [{"ms": round(g / 1e3, 2), "at_ms": round(t / 1e3, 1), "next_kernel": n}
                                   for g, t, n in sorted(gaps, reverse=True)[:6]]
    return result


def check_modes_agree(mesh) -> dict[str, bool]:
    results = {}
    for name, kwargs in MODES.items():
        params = make_params(2, mesh, seed=1)
        Muon(params, [], lr=0.02, **kwargs).step()
        results[name] = [p.to_local().clone() for p in params]
        del params
    base = results["distributed"]
    return {name: all(torch.equal(a, b) for a, b in zip(got, base)) for name, got in results.items()}


def single_gpu_ns_vs_matmul() -> dict:
    coefficients = iteration_coefficients("keller", 5)
    mats = [torch.randn(s, device="cuda") for s in LAYER_SHAPES]
    flops = sum(newton_schulz_flops(*s, 5) for s in LAYER_SHAPES)
    for _ in range(3):
        for m in mats:
            zeropower_via_newton_schulz(m, coefficients)
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for m in mats:
            zeropower_via_newton_schulz(m, coefficients)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    ns_time = statistics.median(times)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    mm_rate = 2 * 8192 ** 3 / statistics.median(times)
    ns_rate = flops / ns_time
    return {"ns_one_layer_ms": ns_time * 1e3, "ns_TFLOPs": ns_rate / 1e12, "matmul_8192_TFLOPs": mm_rate / 1e12,
            "ns_fraction_of_matmul": ns_rate / mm_rate}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--out", default="muon_results.json")
    parser.add_argument("--profile", action="store_true", help="also record one step's GPU kernel time by kind")
    parser.add_argument("--ns-backend", choices=["auto", "torch", "gram"], default="auto",
                        help="torch: keep every matrix on the plain torch Newton-Schulz (the pre-kernel baseline); "
                             "gram: 'auto' with the Gram iteration where it applies (newton_schulz.AUTO_GRAM)")
    parser.add_argument("--ns-cuda-graphs", action="store_true",
                        help="replay the Triton Newton-Schulz from per-shape CUDA graphs (newton_schulz_triton."
                             "CUDA_GRAPHS; off by default)")
    args = parser.parse_args()
    nst.CUDA_GRAPHS = args.ns_cuda_graphs
    if args.ns_backend == "torch":
        newton_schulz.TRITON_MIN_DIM = 1 << 62
    newton_schulz.AUTO_GRAM = args.ns_backend == "gram"
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    mesh = init_device_mesh("cuda", (world,), mesh_dim_names=("dp_shard",))
    results = {"device": torch.cuda.get_device_name(), "gpus": world, "layers": args.layers,
               "torch": torch.__version__, "ns_backend": args.ns_backend, "ns_cuda_graphs": args.ns_cuda_graphs,
               "triton_min_dim": newton_schulz.TRITON_MIN_DIM, "modes": {}}
    results["modes_agree_with_distributed_2_layers"] = check_modes_agree(mesh)
    if rank == 0:
        print("bitwise agreement with Distributed Muon (2 layers):", results["modes_agree_with_distributed_2_layers"],
              flush=True)
    total_flops = args.layers * sum(newton_schulz_flops(*s, 5) for s in LAYER_SHAPES)
    params = make_params(args.layers, mesh, seed=0)
    for name in args.modes:
        opt = Muon(params, [], lr=1e-4, weight_decay=0.0, **MODES[name])
        timed_step(opt)  # warm-up (and momentum buffers)
        runs = [timed_step(opt) for _ in range(args.steps)]
        step_time = statistics.median(t for t, _ in runs)
        peak = max(m for _, m in runs)
        results["modes"][name] = {"ms": step_time * 1e3, "peak_extra_MB": peak / 2 ** 20,
                                  "TFLOPS_per_GPU": total_flops / step_time / world / 1e12}
        if args.profile:
            results["modes"][name]["kernel_ms_by_kind_rank0"] = kernel_time_breakdown(opt)
        for p in params:
            opt.state.pop(p, None)
        del opt
        torch.cuda.empty_cache()
        if rank == 0:
            print(name, json.dumps(results["modes"][name]), flush=True)
    if rank == 0:
        base = results["modes"].get("distributed", {}).get("ms")
        for name, r in results["modes"].items():
            r["speedup_vs_distributed"] = base / r["ms"] if base else None
        results["single_gpu"] = single_gpu_ns_vs_matmul()
        results["ns_TFLOPs_total_per_step"] = total_flops / 1e12
        print(json.dumps(results, indent=1), flush=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
