"""A curriculum domain's documents, from any mix of its sources, addressed by one index.

Source strings (``[[curriculum.domains]] sources``):

* a local ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a directory searched recursively for them (read into
  memory; a ``.txt`` file is one document);
* a token shard directory written by ``python -m motif_titan.data.pretokenize`` (memory-mapped, never
  re-tokenized; pretraining only);
* ``hf:PATH``: ``datasets.load_dataset(PATH, split=<domain split>)`` -- a local dataset directory or data files,
  or a Hub name (Arrow-backed, memory-mapped by ``datasets``);
* ``embedded:NAME``: ``motif_titan/assets/corpus/NAME.jsonl`` (prose, math, code).
"""

import bisect
from pathlib import Path
from typing import Any

import numpy as np

from .curriculum import DomainSpec
from .text_dataloader import TEXT_FILE_SUFFIXES, embedded_assets_dir, find_text_files, read_documents, read_jsonl
from .token_shards import TokenShard, is_token_shard


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records (dicts) of a ``.jsonl`` or ``.parquet`` file, for SFT samples (a bad line is refused naming the
    file and the line)."""
    if path.suffix == ".jsonl":
        return [record for _, record in read_jsonl(path)]
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_table(path).to_pylist()
    raise ValueError(f"{path}: SFT samples come from .jsonl or .parquet files, not {path.suffix!r}")


class DomainDocuments:
    """The concatenated documents of a domain's sources: ``document(i)`` is a text (pretraining), a record
    (SFT), or an array of token ids (token shards)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.ends = list(np.cumsum([len(p) for p in parts]))

    def __len__(self) -> int:
        return int(self.ends[-1]) if self.ends else 0

    def document(self, index: int) -> Any:
        part = bisect.bisect_right(self.ends, index)
        start = int(self.ends[part - 1]) if part else 0
        item = self.parts[part][index - start]
        return item


class _HFColumn:
    """Rows of a ``datasets.Dataset`` (one column, or whole records)."""

    def __init__(self, dataset, column: str | None) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        row = self.dataset[int(index)]
        return row if self.column is None else row[self.column]


def open_domain(index: int, domain: DomainSpec, tokenizer, sft: bool) -> DomainDocuments:
    """Open every source of ``domain``; raise naming ``curriculum.domains[index].sources[j]`` for a missing
    file, an unusable source or one without documents."""
    return open_sources(domain, tokenizer, sft, lambda j, source: f"curriculum.domains[{index}].sources[{j}] = "
                                                                  f"{source!r}")


def open_sources(domain: DomainSpec, tokenizer, sft: bool, where_of, explain=lambda message: message
                 ) -> DomainDocuments:
    """Every source of ``domain``, opened; a missing file, an unusable source or one without documents raises
    prefixed by ``where_of(j, source)`` (how the caller's user named it), the reader's message passed through
    ``explain``."""
    parts = []
    for j, source in enumerate(domain.sources):
        where = where_of(j, source)
        try:
            part = _open_source(source, domain, tokenizer, sft)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{where}: {error}") from error
        except (ValueError, KeyError, OSError) as error:
            raise ValueError(f"{where}: {explain(str(error))}") from error
        if len(part) == 0:
            raise ValueError(f"{where}: the source holds no documents")
        parts.append(part)
    return DomainDocuments(parts)


def _open_source(source: str, domain: DomainSpec, tokenizer, sft: bool):
    if source.startswith("embedded:"):
        name = source.split(":", 1)[1]
        corpus = embedded_assets_dir() / "corpus"
        path = corpus / f"{name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no embedded corpus {name!r}; allowed: "
                                    f"{sorted(p.stem for p in corpus.glob('*.jsonl'))}")
        return read_records(path) if sft else read_documents(path, domain.text_field)
    if source.startswith("hf:"):
        import datasets

        dataset = datasets.load_dataset(source[3:], split=domain.split)
        if not sft and domain.text_field not in dataset.column_names:
            raise ValueError(f"no {domain.text_field!r} column (text_field); columns: {dataset.column_names}")
        return _HFColumn(dataset, None if sft else domain.text_field)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError("no such file or directory")
    if is_token_shard(path):
        if sft:
            raise ValueError("token shards hold pretraining documents; SFT samples need their messages")
        return TokenShard(path, tokenizer)
    files = find_text_files(path)
    if not files:
        raise ValueError(f"no {'/'.join(TEXT_FILE_SUFFIXES)} files and no token shard there")
    if sft:
        return [record for f in files for record in read_records(f)]
    return [doc for f in files for doc in read_documents(f, domain.text_field)]


def document_tokens(document: Any, tokenizer) -> np.ndarray:
    """A pretraining document's token ids with BOS and EOS (a token shard's documents already have them)."""
    if isinstance(document, np.ndarray):
        return document
    return np.asarray(tokenizer.encode(document, add_bos=True, add_eos=True), dtype=np.int64)
