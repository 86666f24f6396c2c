"""Cost of checkpoint manifests (motif_titan.infra.checkpoint_integrity) next to the DCP save they protect.

Saves a random fp32 state of ``--gb`` GB (tensors of a 12.7B-like layer shape mix) with torch.distributed.checkpoint
on the CPU (one process, no process group), then times, on that real DCP folder: ``write_manifest`` (size + chunked
CRC-32 of every file, the save path) and ``verify_step`` (the load path), and the raw throughput of zlib.crc32 and,
for comparison, xxhash's xxh3_64 (installed with ``datasets``) on one in-memory buffer. Files are in the page cache
right after the save, as they are when the manifest is written; a verify after a cold start reads from disk.

    python benchmarks/checkpoint_integrity.py --gb 1.5 --out benchmarks/results/checkpoint_integrity_cpu.json
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib

import torch
import torch.distributed.checkpoint as dcp

from motif_titan.infra.checkpoint_integrity import verify_step, write_manifest


def random_state(gb: float) -> dict[str, torch.Tensor]:
    """Tensors of 4096-wide shapes (attention 4096x4096, MLP 4096x11008) up to ``gb`` GB of fp32."""
    shapes, state, total, i = [(4096, 4096), (4096, 11008), (11008, 4096)], {}, 0, 0
    gen = torch.Generator().manual_seed(0)
    while total < gb * 1e9:
        shape = shapes[i % len(shapes)]
        state[f"layers.{i // 3}.w{i % 3}"] = torch.randn(shape, generator=gen)
        total += shape[0] * shape[1] * 4
        i += 1
    return state


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the DCP folder is written (default: a temp dir)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    state = random_state(args.gb)
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        save_s = []
        for r in range(args.repeat):
            step = os.path.join(root, f"step-{r}")
            begin = time.perf_counter()
            dcp.save(state, checkpoint_id=step, no_dist=True)
            save_s.append(time.perf_counter() - begin)
        step = os.path.join(root, "step-0")
        nbytes = sum(os.path.getsize(os.path.join(step, n)) for n in os.listdir(step))
        gb = nbytes / 1e9
        nfiles = len(os.listdir(step))
        manifest_s = best_of(lambda: write_manifest(step), args.repeat)
        manifest_1t_s = best_of(lambda: write_manifest(step, threads=1), args.repeat)
        verify_s = best_of(lambda: verify_step(step), args.repeat)
        assert verify_step(step) == []
    finally:
        shutil.rmtree(root)

    buf = memoryview(os.urandom(256 << 20))
    crc_s = best_of(lambda: zlib.crc32(buf), args.repeat)
    try:
        import xxhash

        xxh_s = best_of(lambda: xxhash.xxh3_64(buf).digest(), args.repeat)
    except ImportError:
        xxh_s = None

    result = {
        "device": f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "command": " ".join([sys.executable.rsplit('/', 1)[-1], *sys.argv]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "zlib": zlib.ZLIB_RUNTIME_VERSION},
        "checkpoint_gb": round(gb, 3),
        "files": nfiles,
        "dcp_save_s_best": round(min(save_s), 3),
        "dcp_save_s_per_gb": round(min(save_s) / gb, 3),
        "write_manifest_s": round(manifest_s, 3),
        "write_manifest_s_per_gb": round(manifest_s / gb, 3),
        "write_manifest_1_thread_s_per_gb": round(manifest_1t_s / gb, 3),
        "verify_s_per_gb": round(verify_s / gb, 3),
        "manifest_cost_vs_save": round(manifest_s / min(save_s), 3),
        "crc32_in_memory_gb_per_s": round(0.268435456 / crc_s, 2),
        "xxh3_64_in_memory_gb_per_s": round(0.268435456 / xxh_s, 2) if xxh_s else None,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
