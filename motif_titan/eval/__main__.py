"""``python -m motif_titan.eval``: lm-eval tasks on a Motif-2 checkpoint (a TorchTitan DCP step folder or an HF
safetensors folder), through lm-eval's ``simple_evaluate`` with the registered model ``motif_titan``."""

import argparse
import json
import math
import sys
from pathlib import Path

from motif_titan.console import command_line_main

DESCRIPTION = """\
Evaluate a Motif-2 checkpoint on lm-eval tasks with motif_titan's own model (no transformers, no vLLM): a
TorchTitan DCP step folder (model-only or a full training checkpoint) or an HF safetensors folder. Prints
lm-eval's results table; --output writes the results as JSON. Every argument is checked before a weight is read.
"""

EPILOG = """\
Tasks: lm-eval's registered tasks, YAML task files, or the tasks of --include-path (a folder of YAML task
configs; when it has every task asked for, lm-eval's 14,000 built-in tasks are not indexed). A local task with
`dataset_path: json` and `dataset_kwargs: {data_files: ...}` runs offline (HF_DATASETS_OFFLINE=1).
Generation is greedy (tasks that ask for do_sample are refused) with a key/value cache.
"""


def _number_at_least(kind: type, minimum):
    """An argparse type: a ``kind`` >= ``minimum``, else a message naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (kind is float and math.isnan(value)):
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} >= {minimum}, "
                                             f"got {text!r}")
        return value
    return parse


def _limit(text: str) -> int | float:
    """lm-eval's --limit: a count of documents per task, or a fraction of them below 1."""
    value = _number_at_least(float, 0)(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value if value < 1 else int(value) if value == int(value) else value


def build_parser() -> argparse.ArgumentParser:
    from .model_loading import DTYPES

    p = argparse.ArgumentParser(prog="python -m motif_titan.eval", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a TorchTitan DCP step folder (checkpoint/step-N) or an HF safetensors folder")
    p.add_argument("--tasks", required=True, metavar="TASKS", help="comma-separated lm-eval task names or YAML files")
    p.add_argument("--include-path", metavar="DIR", help="a folder of extra YAML task configs")
    p.add_argument("--limit", type=_limit, metavar="N",
                   help="at most N documents per task (a fraction below 1: that share of them)")
    p.add_argument("--num-fewshot", type=_number_at_least(int, 0), metavar="K", help="few-shot examples per prompt")
    p.add_argument("--batch-size", type=_number_at_least(int, 1), default=1, metavar="N",
                   help="requests per forward (default 1)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="parameter dtype of the forward (default float32)")
    p.add_argument("--flavor", help="a motif2 flavor the checkpoint must match (default: the checkpoint's shapes)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="a folder of HF tokenizer files, or 'embedded' (default: the checkpoint folder when it has a "
                        "tokenizer.json, else 'embedded')")
    p.add_argument("--max-length", type=_number_at_least(int, 2), metavar="T",
                   help="context window in tokens (default: the model's max_seq_len)")
    p.add_argument("--max-gen-toks", type=_number_at_least(int, 1), metavar="T",
                   help="default cap on generated tokens where a task sets none (default 256)")
    p.add_argument("--output", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--log-samples", action="store_true", help="keep every document's inputs and outputs in --output")
    return p


def _task_manager(tasks: list[str], include_path: str | None):
    """lm-eval's TaskManager for ``tasks``: only --include-path's tasks when they cover every task asked for
    (indexing lm-eval's built-in tasks takes seconds), else the built-in tasks too. Unknown tasks are refused."""
    from lm_eval.tasks import TaskManager

    def unknown(manager) -> list[str]:
        known = set(manager.all_tasks)
        return [t for t in tasks if t not in known and not (Path(t).is_file() and Path(t).suffix in (".yaml", ".yml"))]

    if include_path is not None:
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if not unknown(manager):
            return manager
    manager = TaskManager(include_path=include_path)
    missing = unknown(manager)
    if missing:
        where = "lm-eval's tasks" + (f" or --include-path {include_path}" if include_path else "")
        raise ValueError(f"--tasks: {', '.join(map(repr, missing))} not found in {where}")
    return manager


def validate(args: argparse.Namespace) -> list[str]:
    """The checks that need no weights; returns the task list."""
    from motif_titan.model import motif2_args

    from .lm_eval_model import resolve_tokenizer_path
    from .model_loading import parse_device

    if not Path(args.checkpoint).is_dir():
        raise ValueError(f"--checkpoint {args.checkpoint}: no such directory (a TorchTitan DCP step folder or an HF "
                         "safetensors folder)")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError(f"--tasks {args.tasks!r}: no task names")
    if args.include_path is not None and not Path(args.include_path).is_dir():
        raise ValueError(f"--include-path {args.include_path}: no such directory")
    if args.flavor is not None and args.flavor not in motif2_args:
        raise ValueError(f"--flavor {args.flavor!r} is not a motif2 flavor; allowed: {sorted(motif2_args)}")
    parse_device(args.device, "--device")
    if args.tokenizer is not None:
        try:
            resolve_tokenizer_path(args.tokenizer, Path(args.checkpoint))
        except ValueError:
            raise ValueError(f"--tokenizer {args.tokenizer}: no such directory (a folder of HF tokenizer files, or "
                             "'embedded')") from None
    if args.output is not None and not Path(args.output).absolute().parent.is_dir():
        raise ValueError(f"--output {args.output}: the folder {Path(args.output).absolute().parent} does not exist")
    return tasks


def run(argv: list[str] | None = None) -> dict:
    """Parse, check, evaluate; returns lm-eval's results dict (raises on bad input before loading the model)."""
    args = build_parser().parse_args(argv)
    tasks = validate(args)

    import lm_eval
    from lm_eval.utils import handle_non_serializable, make_table

    import motif_titan.eval  # noqa: F401  (registers the lm-eval model "motif_titan")

    task_manager = _task_manager(tasks, args.include_path)
    model_args = {"checkpoint": args.checkpoint, "dtype": args.dtype}
    for name in ("flavor", "tokenizer", "max_length", "max_gen_toks"):
        if getattr(args, name) is not None:
            model_args[name] = getattr(args, name)
    results = lm_eval.simple_evaluate(
        model="motif_titan", model_args=model_args, tasks=tasks, num_fewshot=args.num_fewshot, limit=args.limit,
        batch_size=args.batch_size, device=args.device, task_manager=task_manager, log_samples=args.log_samples,
    )
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    if args.output is not None:
        Path(args.output).write_text(json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
        print(f"wrote {args.output}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Bad input ends in one ``error:`` line on stderr and exit status 2."""
    return command_line_main("python -m motif_titan.eval", lambda: run(argv), sigterm=False)


if __name__ == "__main__":
    sys.exit(main())
