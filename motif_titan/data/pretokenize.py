"""Pre-tokenize text sources into a token shard the curriculum dataloader memory-maps (no tokenizing in training).

    python -m motif_titan.data.pretokenize --out shards/prose embedded:prose
    python -m motif_titan.data.pretokenize --tokenizer path/to/hf_assets --out shards/web data/web/ more.parquet
    python -m motif_titan.data.pretokenize --out shards/x --text-field body hf:/local/dataset_dir

Sources are the curriculum's (local .jsonl / .parquet / .txt files or directories, ``hf:PATH``,
``embedded:NAME``), read in order; each document is stored as the loader would tokenize it,
``tokenizer.encode(text, add_bos=True, add_eos=True)``, so a shard and its text give the same batches.
The shard is written under a temporary name (``.<out>.partial-<pid>``) and renamed when complete (see
motif_titan.infra.atomic_output): an error, Ctrl-C or SIGTERM removes the temporary, and the next run for the same
``--out`` removes one a killed run left. Then use the output directory as a source: ``sources = ["shards/prose"]``.
Bad input ends in one ``error:`` line naming the argument (exit status 2).
"""

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

from motif_titan.console import command_line_main

from .curriculum import DomainSpec
from .document_sources import DomainDocuments
from .document_sources import open_sources as open_domain_sources
from .text_dataloader import EMBEDDED, build_tokenizer
from .token_shards import TokenShardWriter, is_token_shard

PROG = "python -m motif_titan.data.pretokenize"

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


def _text_field_hint(message: str, text_field: str) -> str:
    if f"{text_field!r} field" in message or f"FieldRef.Name({text_field})" in message:
        return f"{message.splitlines()[0]} (--text-field {text_field!r}: pass the field that holds the text)"
    return message.replace("(text_field)", "(--text-field)")


def open_sources(sources: list[str], tokenizer, text_field: str = "text", split: str = "train") -> DomainDocuments:
    """Every source's documents; an unusable source raises naming it (as given on the command line) and, for a
    missing text field, ``--text-field``."""
    domain = DomainSpec(name="pretokenize", sources=tuple(sources), text_field=text_field, split=split)
    for source in sources:
        if is_token_shard(Path(source)):
            raise ValueError(f"source {source!r} is a token shard, already tokenized; pretokenize reads text "
                             "sources (.jsonl / .parquet / .txt, hf:PATH, embedded:NAME)")
    return open_domain_sources(domain, tokenizer, False, lambda j, source: f"source {source!r}",
                               lambda message: _text_field_hint(message, text_field))


def pretokenize(sources: list[str], out_dir: Path | str, tokenizer, text_field: str = "text",
                split: str = "train", progress: bool = True) -> Path:
    """Write the shard; return its directory. Nothing is left behind on error (errors name ``out_dir``, not
    its temporary)."""
    documents = open_sources(sources, tokenizer, text_field, split)
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
    except BaseException as error:
        writer.abort()
        translated = writer.user_error(error)
        if translated is not error:
            raise translated from None
        raise
    finally:
        if bar is not None:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="files, directories, hf:PATH or embedded:NAME")
    parser.add_argument("--out", required=True, help="shard directory to create (must not exist)")
    parser.add_argument("--tokenizer", default=EMBEDDED,
                        help="tokenizer directory (model.hf_assets_path), or 'embedded' (default)")
    parser.add_argument("--text-field", default="text", help="text column of jsonl / parquet / HF sources")
    parser.add_argument("--split", default="train", help="split of hf: sources")
    return parser


def _load_tokenizer(path: str):
    if path != EMBEDDED and not Path(path).is_dir():
        raise FileNotFoundError(f"--tokenizer {path!r}: no such directory (a tokenizer directory, as "
                                f"model.hf_assets_path, or {EMBEDDED!r})")
    try:
        return build_tokenizer(SimpleNamespace(model=SimpleNamespace(hf_assets_path=path)))
    except Exception as error:  # the tokenizers library raises its own types
        raise ValueError(f"--tokenizer {path!r}: cannot load a tokenizer there ({error})") from None


def main(argv: list[str] | None = None) -> int:
    """0 on success; bad input prints one ``error:`` line and returns 2; SIGTERM exits with 143. No temporary
    is left in any case."""
    args = build_parser().parse_args(argv)

    def work() -> None:
        tokenizer = _load_tokenizer(args.tokenizer)
        out = pretokenize(args.sources, args.out, tokenizer, args.text_field, args.split)
        print(f"wrote {out}", file=sys.stderr)

    return command_line_main(PROG, work)


if __name__ == "__main__":
    sys.exit(main())
