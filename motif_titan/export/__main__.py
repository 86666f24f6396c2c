"""``python -m motif_titan.export``: a Motif-2 checkpoint (a TorchTitan DCP step folder, or an HF folder) as a
complete HF model folder that Motif's loaders read (HF remote code, their vLLM fork, the MLX port)."""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from motif_titan.console import TensorProgress, command_line_main
from motif_titan.infra.atomic_output import AtomicDirectory, remove_stale_temporaries
from motif_titan.model import motif2_args
from motif_titan.model.hf_config import (MODEL_ARGS_FILE, from_hf_config, model_args_from_record,
                                         shape_differences)
from motif_titan.checkpoint_io import expected_shapes, infer_model_args, open_checkpoint

from .hf_folder import INDEX_FILE, MAX_SHARD_BYTES, export_dtype, write_safetensors, write_side_files

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

DESCRIPTION = """\
Write a Motif-2 checkpoint as an HF model folder: safetensors shards of at most 5 GB with
model.safetensors.index.json, config.json in Motif's field names (num_attention_heads counting every q head,
num_noise_heads, head_dim, hidden_act = "poly_norm", ...), generation_config.json, and the tokenizer, chat-template
and remote-code (*.py) files of --hf-assets. GDA's lambda vectors stay float32, the other tensors take --dtype.

The model's shapes come from the checkpoint itself: the model_args.json every motif_titan step folder carries, or
an HF folder's config.json. --flavor or --config describe a folder written by another tool; the checkpoint's
tensors must have those shapes.
"""

EPILOG = """\
The folder is written under a temporary name (.<out>.partial-<pid>) and renamed when complete; an existing --out
is refused. On an error, Ctrl-C or SIGTERM the temporary is removed; one left by a killed run is removed by the
next run for the same --out. Fields of --hf-assets' config.json that the model does not decide (auto_map,
rope_scaling, token ids, ...) are kept.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m motif_titan.export", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a DCP step folder (<dump>/checkpoint/step-N, model-only or full) or an HF folder")
    parser.add_argument("--out", required=True, help="the HF folder to write (must not exist)")
    parser.add_argument("--hf-assets", help="a folder with the tokenizer (and a source config.json, chat templates, "
                                            "remote code) to ship with the model; 'embedded' = motif_titan's own")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="tensor dtype (default bf16)")
    parser.add_argument("--max-shard-gb", type=_positive_float, default=MAX_SHARD_BYTES / 1e9,
                        help="the largest safetensors shard, in GB (default 5, as transformers)")
    described = parser.add_mutually_exclusive_group()
    described.add_argument("--flavor", help="the motif2 flavor of a checkpoint that does not describe itself")
    described.add_argument("--config", help="a Motif config.json (or a motif_titan model_args.json) describing the "
                                            "checkpoint")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _assets(value: str | None) -> Path | None:
    if value is None:
        return None
    from motif_titan.data.text_dataloader import hf_assets_dir

    path = hf_assets_dir(value)
    if not path.is_dir():
        raise FileNotFoundError(f"--hf-assets {value}: no such directory")
    return path


def _described_args(args, reader):
    """The model args the export writes: --flavor, --config, or the checkpoint's own description, checked against
    the tensors."""
    if args.flavor is not None:
        if args.flavor not in motif2_args:
            raise ValueError(f"--flavor {args.flavor!r} is not a motif2 flavor; allowed: {sorted(motif2_args)}")
        given, label = motif2_args[args.flavor], f"--flavor {args.flavor}"
    elif args.config is not None:
        path = Path(args.config)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"--config {path}: unreadable ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"--config {path}: a JSON object was expected")
        given = (from_hf_config(record, f"--config {path}") if "hidden_size" in record
                 else model_args_from_record(record, f"--config {path}"))
        label = f"--config {path}"
    else:
        if reader.description is None:
            raise ValueError(f"--checkpoint {reader.path} does not describe its model (no {MODEL_ARGS_FILE}, no "
                             "config.json): pass --flavor NAME or --config config.json")
        return infer_model_args(reader)
    differences = shape_differences(infer_model_args(reader), given, model_label=label)
    if differences:
        raise ValueError(f"--checkpoint {reader.path} does not have the shapes of {label}: "
                         f"{'; '.join(differences)}")
    return given


def run(argv: list[str] | None = None) -> dict:
    """Parse and check everything, then write; returns a summary (raises on bad input before writing)."""
    args = build_parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    assets = _assets(args.hf_assets)
    remove_stale_temporaries(args.out)
    if Path(args.out).exists():
        raise FileExistsError(f"--out {args.out} exists; export writes a new folder and replaces nothing")
    reader = open_checkpoint(args.checkpoint, "--checkpoint")
    model_args = _described_args(args, reader)
    if assets is None and reader.format == "hf":
        assets = reader.path  # an HF source ships its own tokenizer, templates and remote code
    shapes = expected_shapes(model_args)
    start = time.monotonic()
    with AtomicDirectory(args.out, "--out", make_parents=True) as tmp:
        progress = TensorProgress(len(shapes), "exporting")
        write_safetensors(tmp, model_args, shapes, reader.get, lambda key: export_dtype(key, dtype),
                          progress.update, max_shard_bytes=int(args.max_shard_gb * 1e9))
        progress.close()
        write_side_files(tmp, model_args, assets, dtype)
        index = json.loads((tmp / INDEX_FILE).read_text())
    summary = {"out": args.out, "tensors": len(index["weight_map"]),
               "shards": len(set(index["weight_map"].values())), "bytes": index["metadata"]["total_size"],
               "seconds": round(time.monotonic() - start, 2)}
    print(f"wrote {args.out}: {summary['tensors']} tensors in {summary['shards']} shards "
          f"({summary['bytes'] / 1e9:.3f} GB, {args.dtype}) in {summary['seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Bad input ends in one ``error:`` line on stderr and exit status 2, SIGTERM in status 143; either way no
    temporary is left."""
    return command_line_main("python -m motif_titan.export", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
