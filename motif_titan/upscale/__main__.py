"""``python -m motif_titan.upscale``: grow a Motif-2 checkpoint (e.g. Motif-2.6B into the Motif-2-12.7B shapes) so the
bigger model starts out computing the smaller one's function."""

import argparse
import json
import os
import sys
import time

from motif_titan.checkpoint_io import infer_model_args, open_checkpoint, write_dcp, write_hf
from motif_titan.console import TensorProgress, command_line_main
from motif_titan.infra.atomic_output import AtomicDirectory, remove_stale_temporaries
from motif_titan.model import motif2_args
from motif_titan.model.hf_config import write_model_args

from .drift import logits_drift
from .plan import DTYPES, FORMATS, UpscaleSpec, matching_flavor, plan_upscale
from .upscaler import Upscaler

DESCRIPTION = """\
Grow a Motif-2 checkpoint while keeping its function: the upscaled model's logits equal the source's (up to the
rounding of the written dtype, which is measured and reported after writing). Three steps, applied tensor by
tensor so memory holds about one tensor at a time:

1. width (--width-factor m): hypercloning. The residual stream becomes m copies of the source's; embeddings are
   tiled along the hidden dim, every linear with a tiled input gets column blocks W/m (rows tiled when its output
   is tiled too), wo and RMSNorm weights are tiled; head counts and head_dim stay. With --noise-snr-db the copies
   get zero-sum noise (cancelling exactly because the copies are equal) so training can tell them apart.
2. heads (--signal-heads-per-group R): GDA head growth from r to R signal heads per noise head (R a multiple of
   r). Each signal head is copied R/r times inside its group and the copies share its wo columns (each / (R/r));
   noise heads and kv heads are kept. Motif-2.6B's differential attention is GDA with r = 1.
3. depth (--num-layers L'): LLaMA-Pro. After every (L/(L'-L))-th layer an identity copy of it is inserted
   (attention wo and FFN w2 zero). Layers that move to a new index get their lambda vectors re-solved and their
   subln weight rescaled, since GDA's lambda_init depends on the layer index.

Motif-2.6B -> Motif-2-12.7B: --width-factor 2 --signal-heads-per-group 4 --num-layers 40.
"""

EPILOG = """\
Inputs: an HF safetensors directory with Motif-2 tensor names (as on the Hub), or a TorchTitan DCP checkpoint of
the motif2 model. Outputs: --format dcp writes a model-only DCP checkpoint for TorchTitan's
checkpoint.initial_load_path (train the target flavor, e.g. --model.flavor 12.7B); --format hf writes safetensors
shards. The output is written under a temporary name (.<dst>.partial-<pid>) and renamed when complete; on an
error, Ctrl-C or SIGTERM the temporary is removed, and one left by a killed run (SIGKILL) is removed by the next
run for the same --dst. Sources are checked first: a truncated safetensors or .distcp file is refused, named.
"""


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, else a message naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m motif_titan.upscale", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True,
                   help="source checkpoint directory (HF safetensors or TorchTitan DCP); with --dry-run also a "
                        "motif2 flavor name (e.g. 2.6B) to plan from its shapes")
    p.add_argument("--dst", help="destination directory (required unless --dry-run)")
    p.add_argument("--width-factor", type=_positive_int, default=1, metavar="N",
                   help="step 1: multiply the hidden and FFN widths by N with hypercloning (default 1: no change)")
    p.add_argument("--signal-heads-per-group", type=_positive_int, default=None, metavar="R",
                   help="step 2: GDA signal heads per noise head in the target, a multiple of the source's "
                        "(default: the source's)")
    p.add_argument("--num-layers", type=_positive_int, default=None, metavar="L",
                   help="step 3: target layer count L = L_src + L_src/k for an integer k (default: the source's)")
    p.add_argument("--noise-snr-db", type=float, default=None, metavar="X",
                   help="noisy cloning: add zero-sum noise at X dB SNR to every cloned block (about 10 in the "
                        "hypercloning paper; default: symmetric, no noise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--format", choices=FORMATS, default="dcp", help="output format (default dcp)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                   help="output dtype (default bf16; cloning runs in fp32, or fp64 for fp64). GDA lambda vectors, "
                        "subln and PolyNorm weights are written in at least fp32, as the model uses them")
    p.add_argument("--dry-run", action="store_true",
                   help="print the source and target shapes, parameter counts and steps; read no weights, write "
                        "nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    p.add_argument("--verify-tokens", type=_non_negative_int, default=32, metavar="T",
                   help="after writing, measure the logits drift on T random tokens, layer by layer in float64 "
                        "(0 skips it; default 32)")
    return p


def run(argv: list[str] | None = None) -> dict:
    """Parse, validate everything, then write; returns a summary (raises on bad input before writing)."""
    args = build_parser().parse_args(argv)
    spec = UpscaleSpec(width_factor=args.width_factor, signal_heads_per_group=args.signal_heads_per_group,
                       num_layers=args.num_layers, noise_snr_db=args.noise_snr_db, seed=args.seed)
    if not args.dry_run:
        if args.dst is None:
            raise ValueError("--dst is required (or pass --dry-run)")
        remove_stale_temporaries(args.dst)  # before the check below: a killed overwrite may be restored
        if not args.overwrite and os.path.exists(args.dst):
            raise FileExistsError(f"--dst {args.dst} exists; pass --overwrite to replace it")
    if args.dry_run and args.src in motif2_args and not os.path.exists(args.src):
        plan = plan_upscale(motif2_args[args.src], spec)  # plan from a flavor's shapes, no checkpoint needed
        print(plan.describe(motif2_args), flush=True)
        return {"plan": plan, "target_shapes_match_flavor": matching_flavor(plan.target, motif2_args)}
    reader = open_checkpoint(args.src)
    plan = plan_upscale(infer_model_args(reader), spec)
    if reader.description is None:
        print(f"warning: --src {reader.path} does not describe its model (no model_args.json, no config.json): its "
              "shapes are read off the tensors, but eps, RoPE theta and the context length are assumed to be "
              "Motif2ModelArgs' defaults; the written model carries these", file=sys.stderr, flush=True)
    print(plan.describe(motif2_args), flush=True)
    summary = {"source": reader.path.as_posix(), "source_format": reader.format, "spec": vars(spec).copy(),
               "target_shapes_match_flavor": matching_flavor(plan.target, motif2_args)}
    if args.dry_run:
        return {**summary, "plan": plan}
    upscaler = Upscaler(plan, reader, DTYPES[args.dtype])
    start = time.monotonic()
    with AtomicDirectory(args.dst, "--dst", args.overwrite) as tmp:
        progress = TensorProgress(len(upscaler.shapes), f"writing {args.format}")
        if args.format == "hf":
            write_hf(tmp, plan.target, upscaler.shapes, upscaler.tensor, upscaler.dtype_of, DTYPES[args.dtype],
                     reader.path if reader.format == "hf" else None, progress.update)
        else:
            write_dcp(tmp, upscaler.shapes, upscaler.dtypes(), upscaler.tensor, progress.update)
            write_model_args(tmp, plan.target)  # the folder describes itself, like a training run's step folder
        progress.close()
        summary["write_seconds"] = round(time.monotonic() - start, 2)
        if args.verify_tokens > 0:
            written = open_checkpoint(tmp)
            summary["logits_drift"] = logits_drift(reader, plan.source, written, plan.target, args.verify_tokens)
            print(f"measured logits drift of the written {args.dtype} checkpoint on {args.verify_tokens} random "
                  f"tokens (float64 evaluation, max |diff| / max |source logit|): {summary['logits_drift']:.3e}")
        (tmp / "upscale.json").write_text(json.dumps({**summary, "argv": argv if argv is not None else sys.argv[1:],
                                                      "plan": plan.describe(motif2_args)}, indent=2))
    print(f"wrote {args.dst} ({args.format}, {args.dtype}) in {summary['write_seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Bad input ends in one ``error:`` line on stderr and exit status 2, SIGTERM in status 143; either way no
    temporary is left."""
    return command_line_main("python -m motif_titan.upscale", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
