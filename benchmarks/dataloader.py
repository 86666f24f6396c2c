"""Curriculum dataloader throughput on the CPU, per worker, against what one H100 consumes training Motif-2-12.7B.

    python benchmarks/dataloader.py --out benchmarks/results/dataloader_cpu.json

One worker = the loader with ``training.dataloader.num_workers = 0`` (the training process itself makes the
micro-batches; with W workers each makes every W-th micro-batch, so W workers give up to W times this). Data: the
embedded corpus as three domains (prose, math, code) mixed 0.5 / 0.25 / 0.25, micro-batches of
``local_batch_size x seq_len`` tokens, read until ``--seconds`` have passed after a warm-up (several epochs of
the corpus: documents are tokenized again in every epoch, as in a long run).

* on the fly: the domains are the .jsonl text, tokenized by the loader;
* pre-tokenized: the same domains as token shards (``python -m motif_titan.data.pretokenize``), memory-mapped.

Baselines of the same run: the tokenizer alone (``tokenizer.encode`` of the same documents, one at a time, as the
loader calls it) and a plain copy of the shards' tokens into int64 arrays (``np.concatenate``).

GPU side: FLOPs per token of the 12.7B flavor from its own ``get_nparams_and_flops`` (model built on the meta
device; 6 x matmul weights + attention at the row length), at 40% MFU of the H100's dense BF16 peak (989 TFLOP/s):
tokens/s one H100 consumes. Margin = loader tokens/s per worker / that.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchtitan.config import ConfigManager

from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
from motif_titan.data.pretokenize import pretokenize
from motif_titan.data.text_dataloader import build_tokenizer, embedded_assets_dir, read_documents
from motif_titan.model import Motif2Model, motif2_args

H100_BF16_DENSE_PEAK = 989e12
MFU = 0.40
DOMAINS = ("prose", "math", "code")
WEIGHTS = {"prose": 0.5, "math": 0.25, "code": 0.25}


def h100_tokens_per_second(seq_len: int) -> tuple[float, int]:
    args = motif2_args["12.7B"]
    with torch.device("meta"):
        model = Motif2Model(args)
    nparams, flops_per_token = args.get_nparams_and_flops(model, seq_len)
    return MFU * H100_BF16_DENSE_PEAK / flops_per_token, flops_per_token


def loader_tokens_per_second(sources: dict[str, str], tokenizer, seq_len: int, local_batch_size: int,
                             seconds: float) -> dict:
    config = ConfigManager().parse_args([
        "--job.custom_config_module", "motif_titan.job_config", "--model.hf_assets_path", "embedded",
        "--training.seq_len", str(seq_len), "--training.local_batch_size", str(local_batch_size)])
    config.curriculum.domains = [{"name": d, "sources": [sources[d]]} for d in DOMAINS]
    config.curriculum.phases = [{"start": 0, "end": 1, "start_weights": WEIGHTS}]
    iterator = iter(build_curriculum_dataloader(1, 0, tokenizer, config))
    for _ in range(3):
        next(iterator)
    tokens, batches, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, labels = next(iterator)
        tokens += labels.numel()
        batches += 1
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": tokens / elapsed, "micro_batches": batches, "tokens": tokens, "seconds": elapsed}


def tokenizer_tokens_per_second(tokenizer, seconds: float) -> float:
    documents = [doc for d in DOMAINS for doc in read_documents(embedded_assets_dir() / "corpus" / f"{d}.jsonl")]
    tokens, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        tokens += len(tokenizer.encode(documents[i % len(documents)], add_bos=True, add_eos=True))
        i += 1
    return tokens / (time.perf_counter() - start)


def copy_tokens_per_second(shard_dirs: list[Path], seconds: float) -> float:
    arrays = [np.memmap(d / "tokens.bin", dtype=np.uint16, mode="r") for d in shard_dirs]
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for array in arrays:
            tokens += len(np.concatenate([array.astype(np.int64)]))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--local-batch-size", type=int, default=2)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = build_tokenizer(ConfigManager().parse_args(["--model.hf_assets_path", "embedded"]))
    results = {"device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
                         "shared with other work", "torch": torch.__version__,
               "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        shards = {d: str(pretokenize([f"embedded:{d}"], Path(tmp) / d, tokenizer, progress=False)) for d in DOMAINS}
        text = {d: f"embedded:{d}" for d in DOMAINS}
        results["tokenizer_alone_tokens_per_s"] = tokenizer_tokens_per_second(tokenizer, args.seconds)
        results["shard_copy_tokens_per_s"] = copy_tokens_per_second([Path(p) for p in shards.values()], args.seconds)
        for seq_len in args.seq_lens:
            gpu_tps, flops_per_token = h100_tokens_per_second(seq_len)
            for mode, sources in (("on_the_fly", text), ("pretokenized", shards)):
                row = {"mode": mode, "seq_len": seq_len, "local_batch_size": args.local_batch_size,
                       **loader_tokens_per_second(sources, tokenizer, seq_len, args.local_batch_size, args.seconds),
                       "h100_12.7B_flops_per_token": flops_per_token, "h100_12.7B_tokens_per_s_at_40pct_mfu": gpu_tps}
                row["margin"] = row["tokens_per_s"] / gpu_tps
                results["rows"].append(row)
                print(f"{mode:>13} seq {seq_len:>6}: {row['tokens_per_s']:>12,.0f} tokens/s per worker; one H100 "
                      f"(12.7B, 40% MFU) consumes {gpu_tps:,.0f} tokens/s -> margin {row['margin']:.1f}x", flush=True)
    print(f"baselines: tokenizer alone {results['tokenizer_alone_tokens_per_s']:,.0f} tokens/s, shard copy "
          f"{results['shard_copy_tokens_per_s']:,.0f} tokens/s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
