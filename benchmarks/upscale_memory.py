"""Peak memory and wall time of ``python -m motif_titan.upscale`` on a random checkpoint of a real shape.

Writes a random bf16 source checkpoint in HF safetensors layout (one shard per layer, generated tensor by tensor,
so making it needs little memory), then runs the upscaler CLI in a child process and reports the child's peak RSS
(its VmHWM) and wall time, next to the sizes of the source and of the written output: a tool that held the
whole target in memory would need at least the output's size.

    python benchmarks/upscale_memory.py --workdir /big/disk/upscale_bench \\
        --source-flavor 2.6B -- --width-factor 2 --signal-heads-per-group 4 --num-layers 40 --format dcp
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from motif_titan.model import Motif2StateDictAdapter, motif2_args
from motif_titan.checkpoint_io import expected_shapes


def write_random_source(args, directory: Path, seed: int = 0) -> int:
    """Random bf16 tensors with the flavor's shapes (values ~ N(0, 0.02), vectors ~ 1), one shard per layer."""
    directory.mkdir(parents=True)
    adapter = Motif2StateDictAdapter(args, None)
    generator = torch.Generator().manual_seed(seed)
    shards: dict[str, list[str]] = {}
    for key in expected_shapes(args, include_tied_output=False):
        shard = key.split(".")[1] if key.startswith("layers.") else "top"
        shards.setdefault(shard, []).append(key)
    shapes, total = expected_shapes(args, include_tied_output=False), 0
    for name, keys in shards.items():
        tensors = {}
        for key in keys:
            shape = shapes[key]
            t = torch.randn(shape, generator=generator, dtype=torch.float32)
            t = (t * 0.1 + 1.0) if len(shape) == 1 else t * 0.02
            tensors.update(adapter.to_hf({key: t.to(torch.bfloat16)}))
        save_file(tensors, str(directory / f"model-{name}.safetensors"))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    return total


# The child's own peak resident set (VmHWM, bytes). Not ru_maxrss: on Linux a child's ru_maxrss also counts the
# parent's resident set at fork time, which here holds the freshly generated source.
_PRINT_PEAK = ("print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024)")


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--source-flavor", default="2.6B", choices=sorted(motif2_args))
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the source and output checkpoints")
    parser.add_argument("upscale_args", nargs="*", help="arguments for the upscaler after --")
    args = parser.parse_args()
    src, dst = args.workdir / "source", args.workdir / "upscaled"
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    start = time.monotonic()
    source_bytes = write_random_source(motif2_args[args.source_flavor], src)
    make_seconds = time.monotonic() - start

    floor = subprocess.run([sys.executable, "-c", f"import motif_titan.upscale.__main__; {_PRINT_PEAK}"],
                           capture_output=True, text=True, check=True)
    import_floor_rss = int(floor.stdout.split()[-1])
    upscale_argv = ["--src", str(src), "--dst", str(dst), *args.upscale_args]
    command = [sys.executable, "-c", f"import sys; from motif_titan.upscale.__main__ import main; "
               f"code = main({upscale_argv!r}); {_PRINT_PEAK}; sys.exit(code)"]
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    peak_rss = int(proc.stdout.split()[-1])
    command = [sys.executable, "-m", "motif_titan.upscale", *upscale_argv]  # what the child ran, as a CLI
    summary = json.loads((dst / "upscale.json").read_text())
    result = {
        "device": f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} threads), CPU only",
        "command": " ".join(command[1:]),
        "source_flavor": args.source_flavor,
        "source_bytes": source_bytes,
        "output_bytes": directory_bytes(dst),
        "upscale_peak_rss_bytes": peak_rss,
        "import_only_peak_rss_bytes": import_floor_rss,
        "upscale_wall_seconds": round(wall, 1),
        "upscale_write_seconds": summary.get("write_seconds"),
        "logits_drift": summary.get("logits_drift"),
        "make_source_seconds": round(make_seconds, 1),
        "stdout_tail": proc.stdout[-1500:],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
