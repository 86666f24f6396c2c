"""Pre-tokenize text sources into a token shard the curriculum dataloader memory-maps (no tokenizing in training).

    python -m motif_titan.data.pretokenize --out shards/prose embedded:prose
    python -m motif_titan.data.pretokenize --tokenizer path/to/hf_assets --out shards/web data/web/ more.parquet
    python -m motif_titan.data.pretokenize --out shards/x --text-field body hf:/local/dataset_dir

Sources are the curriculum's (local .jsonl / .parquet / .txt files or directories, ``hf:PATH``,
``embedded:NAME``), read in order; each document is stored as the loader would tokenize it,
``tokenizer.encode(text, add_bos=True, add_eos=True)``, so a shard and its text give the same batches.
The shard is written under a temporary name and renamed when complete (see motif_titan.data.token_shards).
Then use the output directory as a source: ``sources = ["shards/prose"]``.
"""

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

from .curriculum import DomainSpec
from .document_sources import open_domain
from .text_dataloader import EMBEDDED, build_tokenizer
from .token_shards import TokenShardWriter

BATCH_DOCUMENTS = 256


def _progress(total: int):
    """tqdm when installed, else a counter on stderr."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="doc", desc="pretokenize", file=sys.stderr)
    except ImportError:
        class Counter:
            def __init__(self):
                self.done = 0

            def update(self, n):
                self.done += n
                print(f"\rpretokenize: {self.done}/{total} documents", end="", file=sys.stderr, flush=True)

            def close(self):
                print(file=sys.stderr)

        return Counter()


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """``tokenizer.encode(text, add_bos=True, add_eos=True)`` for each text, through the Rust batch encoder when
    the tokenizer is TorchTitan's HuggingFaceTokenizer."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None or not hasattr(tokenizer, "hf_adds_bos"):
        return [tokenizer.encode(t, add_bos=True, add_eos=True) for t in texts]
    out = []
    for encoding in inner.encode_batch(texts):
        ids = encoding.ids
        if not tokenizer.hf_adds_bos and tokenizer.bos_id is not None:
            ids = [tokenizer.bos_id, *ids]
        if not tokenizer.hf_adds_eos and tokenizer.eos_id is not None:
            ids = [*ids, tokenizer.eos_id]
        out.append(ids)
    return out


def pretokenize(sources: list[str], out_dir: Path | str, tokenizer, text_field: str = "text",
                split: str = "train", progress: bool = True) -> Path:
    """Write the shard; return its directory. Nothing is left behind on error."""
    domain = DomainSpec(name="pretokenize", sources=tuple(sources), text_field=text_field, split=split)
    documents = open_domain(0, domain, tokenizer, sft=False)
    writer = TokenShardWriter(out_dir, tokenizer)
    bar = _progress(len(documents)) if progress else None
    try:
        for start in range(0, len(documents), BATCH_DOCUMENTS):
            texts = [documents.document(i) for i in range(start, min(start + BATCH_DOCUMENTS, len(documents)))]
            if any(not isinstance(t, str) for t in texts):
                raise ValueError("pretokenize reads text sources; a token shard is already tokenized")
            for ids in encode_batch(tokenizer, texts):
                writer.add(ids)
            if bar is not None:
                bar.update(len(texts))
        return writer.close(list(sources))
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="files, directories, hf:PATH or embedded:NAME")
    parser.add_argument("--out", required=True, help="shard directory to create (must not exist)")
    parser.add_argument("--tokenizer", default=EMBEDDED,
                        help="tokenizer directory (model.hf_assets_path), or 'embedded' (default)")
    parser.add_argument("--text-field", default="text", help="text column of jsonl / parquet / HF sources")
    parser.add_argument("--split", default="train", help="split of hf: sources")
    args = parser.parse_args(argv)

    tokenizer = build_tokenizer(SimpleNamespace(model=SimpleNamespace(hf_assets_path=args.tokenizer)))
    out = pretokenize(args.sources, args.out, tokenizer, args.text_field, args.split)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
