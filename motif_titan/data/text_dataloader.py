"""Tokenizer and dataloader builders for the TrainSpec: embedded default data and local text files.

``--model.hf_assets_path embedded`` loads the byte-level BPE (vocab 2048) packaged in
``motif_titan/assets/tokenizer``; ``--training.dataset embedded`` trains on the packaged
prose/math/code corpus in ``motif_titan/assets/corpus`` (both built by
``python scripts/build_embedded_assets.py``), so the debug model trains with no downloads.

``--training.dataset NAME --training.dataset_path PATH`` reads local ``.jsonl`` (one JSON object
per line, field ``text``), ``.txt`` (a whole file is one document) and ``.parquet`` (column
``text``) files: PATH is one such file or a directory searched recursively, or a token shard
directory written by ``python -m motif_titan.data.pretokenize`` (memory-mapped through
``motif_titan.data.token_shards.TokenShard``, never re-tokenized). Any dataset that
does not resolve to local files (``c4``, ``c4_test``, ... with their own paths) is handed to
TorchTitan's ``build_text_dataloader`` unchanged.
"""

import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.components.tokenizer import BaseTokenizer, HuggingFaceTokenizer
from torchtitan.hf_datasets.text_datasets import DATASETS as TORCHTITAN_DATASETS
from torchtitan.tools.logging import logger

from motif_titan.titan_version import TORCHTITAN_03, load_hf_tokenizer

from .positions import DocumentPositionsLoader
from .token_shards import TokenShard, is_token_shard

if TORCHTITAN_03:
    from motif_titan.titan03.dataloader import build_torchtitan_text_dataloader
else:
    from torchtitan.hf_datasets.text_datasets import build_text_dataloader as build_torchtitan_text_dataloader

EMBEDDED = "embedded"
TEXT_FILE_SUFFIXES = (".jsonl", ".txt", ".parquet")


def embedded_assets_dir() -> Path:
    """``motif_titan/assets`` of the imported package (a source checkout or an installed wheel)."""
    return Path(__file__).resolve().parents[1] / "assets"


def hf_assets_dir(configured: str) -> Path:
    """The folder an ``hf_assets_path``-like value names: ``"embedded"`` is the packaged tokenizer's
    (``motif_titan/assets/tokenizer``), anything else the path itself."""
    return embedded_assets_dir() / "tokenizer" if configured == EMBEDDED else Path(configured)


def build_tokenizer(job_config) -> HuggingFaceTokenizer:
    """TorchTitan's ``build_hf_tokenizer``, with ``model.hf_assets_path = "embedded"`` resolving
    to the packaged tokenizer directory."""
    configured = job_config.model.hf_assets_path
    path = None if configured is None else hf_assets_dir(configured)
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"model.hf_assets_path={configured!r}: tokenizer directory {str(path)!r} does not exist "
            f"(use {EMBEDDED!r} for the packaged tokenizer)"
        )
    return load_hf_tokenizer(str(path))


def find_text_files(path: Path) -> list[Path]:
    """``path`` itself if it is a text file, else the text files under it, sorted by relative path."""
    if path.is_file():
        return [path] if path.suffix in TEXT_FILE_SUFFIXES else []
    files = (f for f in path.rglob("*") if f.is_file() and f.suffix in TEXT_FILE_SUFFIXES)
    return sorted(files, key=lambda f: f.relative_to(path).as_posix())


def read_jsonl(path: Path):
    """(1-based line number, record) of every non-blank line of a ``.jsonl`` file; a line that is not a JSON
    object is refused naming the file and the line."""
    with path.open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not UTF-8 text ({error.reason} at column "
                                 f"{error.start + 1})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg} at column "
                                 f"{error.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: a JSON object is needed, got "
                                 f"{type(record).__name__} {_short(record)}")
            yield line_number, record


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text_of(where: str, value: Any, text_field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: field {text_field!r} must be a string, got {type(value).__name__} {_short(value)}")
    return value


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """The non-empty documents of one ``.jsonl``, ``.txt`` or ``.parquet`` file, in file order. Bad content is
    refused naming the file and the 1-based line (``.jsonl``) or row (``.parquet``)."""
    if path.suffix == ".txt":
        try:
            texts = [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    elif path.suffix == ".jsonl":
        texts = []
        for line_number, record in read_jsonl(path):
            if text_field not in record:
                raise ValueError(f"{path}, line {line_number}: no {text_field!r} field (keys: {sorted(record)})")
            texts.append(_text_of(f"{path}, line {line_number}", record[text_field], text_field))
    elif path.suffix == ".parquet":
        import pyarrow.parquet

        table = pyarrow.parquet.read_table(path)
        if text_field not in table.column_names:
            raise ValueError(f"{path}: no {text_field!r} column (columns: {table.column_names})")
        texts = [_text_of(f"{path}, row {row}", text, text_field)
                 for row, text in enumerate(table.column(text_field).to_pylist(), start=1)]
    else:
        raise ValueError(f"{path}: unsupported suffix, expected one of {TEXT_FILE_SUFFIXES}")
    return [text for text in texts if text and text.strip()]


class LocalTextDataset(IterableDataset, Stateful):
    """Documents of local text files, tokenized and packed into ``seq_len + 1`` token windows.

    All documents of all ``files`` (one file per domain, say) are loaded into memory. Each epoch
    orders them by a shuffle seeded with ``(seed, epoch)``, which interleaves the files, and the
    document at position ``i`` of that order goes to DP rank ``i % dp_world_size``, so ranks read
    disjoint documents. A rank encodes its documents with BOS and EOS, appends them to a token
    buffer, and yields ``({"input": x[:-1]}, x[1:])`` for each full window ``x``, exactly like
    TorchTitan's ``HuggingFaceTextDataset``. With ``infinite`` the next epoch follows; without it
    the leftover tokens (less than a window) are dropped.

    ``state_dict`` holds the epoch, the position in the rank's documents and the token buffer,
    so a loader restored from it yields the same samples as one that never stopped.
    With ``num_workers > 0`` every worker would read the rank's full stream (as with TorchTitan's
    dataset): keep ``training.dataloader.num_workers = 0``.
    """

    def __init__(
        self,
        files: Sequence[Path | str],
        tokenizer: BaseTokenizer,
        seq_len: int,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        infinite: bool = False,
        text_field: str = "text",
        seed: int = 0,
    ) -> None:
        self.files = [Path(f) for f in files]
        if len(self.files) == 1 and is_token_shard(self.files[0]):
            # documents already tokenized, with BOS and EOS (python -m motif_titan.data.pretokenize)
            self._documents = TokenShard(self.files[0], tokenizer)
        else:
            self._documents = [doc for f in self.files for doc in read_documents(f, text_field)]
        if len(self._documents) < dp_world_size:
            raise ValueError(
                f"{len(self._documents)} non-empty documents in {[str(f) for f in self.files]}, "
                f"fewer than the {dp_world_size} data-parallel ranks"
            )
        self._tokenizer = tokenizer
        self.seq_len = seq_len
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.infinite = infinite
        self.seed = seed
        self._ordered_epoch: int | None = None
        self._rank_documents: list[str] = []

        # Variables for checkpointing
        self._epoch = 0
        self._document_index = 0
        self._token_buffer: list[int] = []

    @property
    def num_documents(self) -> int:
        """Documents over all ranks."""
        return len(self._documents)

    def rank_documents(self, epoch: int) -> list:
        """The documents this rank reads in ``epoch``, in reading order (texts, or a token shard's id arrays)."""
        if self._ordered_epoch != epoch:
            order = list(range(len(self._documents)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._rank_documents = [self._documents[i] for i in order[self.dp_rank :: self.dp_world_size]]
            self._ordered_epoch = epoch
        return self._rank_documents

    def __iter__(self):
        window = self.seq_len + 1
        while True:
            while len(self._token_buffer) >= window:
                x = torch.LongTensor(self._token_buffer[:window])
                self._token_buffer = self._token_buffer[window:]
                yield {"input": x[:-1]}, x[1:]

            documents = self.rank_documents(self._epoch)
            if self._document_index < len(documents):
                document = documents[self._document_index]
                self._document_index += 1
                if isinstance(document, str):
                    self._token_buffer.extend(self._tokenizer.encode(document, add_bos=True, add_eos=True))
                else:  # a token shard's document: ids with BOS and EOS
                    self._token_buffer.extend(document.tolist())
            elif self.infinite:
                self._epoch += 1
                self._document_index = 0
                logger.warning(f"Local text dataset is being re-looped (epoch {self._epoch})")
            else:
                logger.warning("Local text dataset has run out of data")
                return

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "document_index": self._document_index,
            "token_buffer": self._token_buffer,
            "num_documents": len(self._documents),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["num_documents"] != len(self._documents):
            logger.warning(
                f"Resuming a local text dataset saved with {state_dict['num_documents']} documents "
                f"on {len(self._documents)} documents: the data order differs from the original run"
            )
        self._epoch = state_dict["epoch"]
        self._document_index = state_dict["document_index"]
        self._token_buffer = list(state_dict["token_buffer"])


def local_text_files(job_config) -> list[Path] | None:
    """The local files ``job_config.training`` names (text files, or one token shard directory), or None for a
    dataset TorchTitan handles."""
    training = job_config.training
    if training.dataset == EMBEDDED:
        return find_text_files(embedded_assets_dir() / "corpus")
    torchtitan_dataset = training.dataset.lower() in TORCHTITAN_DATASETS
    accepted = (f"training.dataset = {EMBEDDED!r} (the packaged corpus), one of TorchTitan's datasets "
                f"{sorted(TORCHTITAN_DATASETS)}, or any other name with training.dataset_path set to a "
                f"{'/'.join(TEXT_FILE_SUFFIXES)} file, a directory of them, or a token shard directory written by "
                "python -m motif_titan.data.pretokenize")
    if training.dataset_path is None:
        if torchtitan_dataset:
            return None
        raise ValueError(f"training.dataset = {training.dataset!r} is not a dataset this project's text dataloader "
                         f"knows, and training.dataset_path is not set (a custom name needs it); allowed: {accepted}")
    path = Path(training.dataset_path)
    if not path.exists():
        if torchtitan_dataset:
            return None
        raise FileNotFoundError(
            f"training.dataset_path = {training.dataset_path!r} does not exist; training.dataset = "
            f"{training.dataset!r} is neither {EMBEDDED!r} nor one of TorchTitan's datasets "
            f"{sorted(TORCHTITAN_DATASETS)}, so the path must be a local {'/'.join(TEXT_FILE_SUFFIXES)} "
            "file, a directory of them, or a token shard directory (python -m motif_titan.data.pretokenize)"
        )
    if is_token_shard(path):
        return [path]
    files = find_text_files(path)
    if not files and not torchtitan_dataset:
        raise ValueError(
            f"training.dataset_path = {training.dataset_path!r} holds no "
            f"{', '.join(TEXT_FILE_SUFFIXES)} files and is not a token shard directory"
        )
    return files or None


def build_text_dataloader(
    dp_world_size: int,
    dp_rank: int,
    tokenizer: BaseTokenizer,
    job_config,
    infinite: bool = True,
) -> ParallelAwareDataloader:
    """The TrainSpec's ``build_dataloader_fn``: the embedded corpus, local text files, or
    TorchTitan's own text dataloader (see the module docstring)."""
    files = local_text_files(job_config)
    if files is None:
        return build_torchtitan_text_dataloader(
            dp_world_size, dp_rank, tokenizer, job_config, infinite=infinite
        )
    training = job_config.training
    field = "training.dataset" if training.dataset == EMBEDDED else "training.dataset_path"
    try:
        dataset = LocalTextDataset(
            files,
            tokenizer,
            seq_len=training.seq_len,
            dp_rank=dp_rank,
            dp_world_size=dp_world_size,
            infinite=infinite,
        )
    except ValueError as error:
        value = training.dataset if field == "training.dataset" else training.dataset_path
        raise ValueError(f"{field} = {value!r}: {error}") from error
    logger.info(
        f"Local text dataset: {dataset.num_documents} documents from {len(files)} files, "
        f"dp rank {dp_rank} of {dp_world_size}"
    )
    dataloader_kwargs = {**asdict(training.dataloader), "batch_size": training.local_batch_size}
    return LocalTextDataloader(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size, **dataloader_kwargs)


class LocalTextDataloader(DocumentPositionsLoader, ParallelAwareDataloader):
    """TorchTitan's ParallelAwareDataloader over a LocalTextDataset (per-document positions on request, see
    motif_titan.data.positions)."""
