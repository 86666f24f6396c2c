"""A curriculum domain's documents, from any mix of its sources, addressed by one index.

Source strings (``[[curriculum.domains]] sources``):

* a local ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a directory searched recursively for them (read into
  memory; a ``.txt`` file is one document);
* a token shard directory written by ``python -m motif_titan.data.pretokenize`` (memory-mapped, never
  re-tokenized; pretraining only);
* ``hf:PATH``: ``datasets.load_dataset(PATH, split=<domain split>)`` -- a local dataset directory or data files,
  or a Hub name (Arrow-backed, memory-mapped by ``datasets``);
* ``embedded:NAME``: ``motif_titan/assets/corpus/NAME.jsonl`` (prose, math, code).

A domain with ``streaming = true`` has only ``hf:`` sources, opened with ``load_dataset(PATH, split=...,
streaming=True)`` (an ``IterableDataset``: nothing is downloaded or read up front, the length is unknown) and read
in stream order by :class:`~motif_titan.data.packing.StreamCursor`: :class:`StreamedDocuments`.
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


class StreamedDocuments:
    """The ``hf:`` sources of a streamed domain, as ``datasets.IterableDataset`` objects (see the module
    docstring). A stream of them is read by :class:`~motif_titan.data.packing.StreamCursor`; this class only opens
    them, splits one for a stream and turns a read batch into documents (texts, or whole records for SFT)."""

    def __init__(self, sources: list, column: str | None, domain: str, wheres: list[str]) -> None:
        self.sources = sources
        self.domain = domain
        """``curriculum.domains[i] ('name')``, for errors."""
        self.column = column
        """The text column (pretraining), or None: a document is the whole record (SFT)."""
        self.wheres = wheres
        """How the user named each source (``curriculum.domains[i].sources[j] = 'hf:...'``), for errors."""

    def split(self, source: int, stream: int, num_streams: int):
        """A fresh ``IterableDataset`` of stream ``stream``'s share of source ``source`` (see
        :class:`~motif_titan.data.packing.StreamCursor` for how ``split_dataset_by_node`` splits it)."""
        from datasets.distributed import split_dataset_by_node

        _reset_fsspec_in_forked_worker()
        return split_dataset_by_node(self.sources[source], rank=stream, world_size=num_streams)

    def documents(self, source: int, batch: dict[str, list]) -> list[Any]:
        """The documents of one batch read by ``IterableDataset.iter`` (a dict of columns)."""
        if self.column is None:
            return [dict(zip(batch, row)) for row in zip(*batch.values())]
        if self.column not in batch:
            raise ValueError(f"{self.wheres[source]}: no {self.column!r} column (text_field); columns: "
                             f"{list(batch)}")
        return batch[self.column]


_FSSPEC_RESET_IN = None


def _reset_fsspec_in_forked_worker() -> None:
    """A forked dataloader worker inherits fsspec's event-loop thread lock but not the thread, and a remote (Hub)
    stream read through it then hangs. ``datasets`` resets it when it iterates in a worker itself; the streams here
    are read with ``IterableDataset.iter`` (see StreamCursor), which does not, so do it once per worker process."""
    global _FSSPEC_RESET_IN
    import os

    from torch.utils.data import get_worker_info

    if get_worker_info() is not None and _FSSPEC_RESET_IN != os.getpid():
        import fsspec.asyn

        fsspec.asyn.reset_lock()
        _FSSPEC_RESET_IN = os.getpid()


def open_domain(index: int, domain: DomainSpec, tokenizer, sft: bool) -> DomainDocuments | StreamedDocuments:
    """Open every source of ``domain``; raise naming ``curriculum.domains[index].sources[j]`` for a missing
    file, an unusable source or one without documents."""
    def where_of(j: int, source: str) -> str:
        return f"curriculum.domains[{index}].sources[{j}] = {source!r}"

    if domain.streaming:
        return open_streamed_sources(domain, sft, f"curriculum.domains[{index}] ({domain.name!r})", where_of)
    return open_sources(domain, tokenizer, sft, where_of)


def open_streamed_sources(domain: DomainSpec, sft: bool, domain_where: str, where_of) -> StreamedDocuments:
    """The ``hf:`` sources of a streamed domain, opened without reading documents. A known column list without the
    text column is refused here; an unknown one (some builders infer it while reading) when the first batch is read.
    That a stream gets documents at all is checked when it reads (see StreamCursor)."""
    import datasets

    sources, wheres = [], []
    for j, source in enumerate(domain.sources):
        where = where_of(j, source)
        try:
            dataset = datasets.load_dataset(source[3:], split=domain.split, streaming=True)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{where}: {error}") from error
        except (ValueError, KeyError, OSError) as error:
            raise ValueError(f"{where}: {error}") from error
        columns = dataset.column_names
        if not sft and columns is not None and domain.text_field not in columns:
            raise ValueError(f"{where}: no {domain.text_field!r} column (text_field); columns: {columns}")
        sources.append(dataset)
        wheres.append(where)
    return StreamedDocuments(sources, None if sft else domain.text_field, domain_where, wheres)


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
