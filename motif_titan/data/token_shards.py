"""Pre-tokenized token shards: a directory the loader memory-maps instead of tokenizing text.

    shard/
      tokens.bin         every document's tokens (BOS ... EOS), concatenated; uint16 if the vocab fits, else uint32
      doc_offsets.npy    int64, num_documents + 1 offsets into tokens.bin
      token_shard.json   format, dtype, counts, the tokenizer's bos/eos ids, vocab size and sha256

Written by :class:`TokenShardWriter` (``python -m motif_titan.data.pretokenize``) under a temporary name and
renamed when complete (motif_titan.infra.atomic_output), so a shard directory is either whole or absent. A shard
is read only with the tokenizer that wrote it (same sha256): the ids would mean nothing with another.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from motif_titan.infra.atomic_output import AtomicDirectory

FORMAT = "motif_titan.token_shard.v1"
META = "token_shard.json"
TOKENS = "tokens.bin"
OFFSETS = "doc_offsets.npy"


def tokenizer_fingerprint(tokenizer) -> dict:
    """bos/eos ids, vocab size and a sha256 of the tokenizer's serialized model (a TorchTitan
    HuggingFaceTokenizer, whose ``tokenizer`` is a ``tokenizers.Tokenizer``)."""
    serialized = tokenizer.tokenizer.to_str() if hasattr(tokenizer, "tokenizer") else repr(tokenizer)
    return {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer_sha256": hashlib.sha256(serialized.encode()).hexdigest()}


def is_token_shard(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file()


class TokenShardWriter:
    """Append documents' token ids; ``close()`` writes the index and renames the directory into place."""

    def __init__(self, out_dir: Path | str, tokenizer, label: str = "--out") -> None:
        self.out_dir = Path(out_dir)
        self.fingerprint = tokenizer_fingerprint(tokenizer)
        self.dtype = np.uint16 if self.fingerprint["vocab_size"] <= 2**16 else np.uint32
        self._output = AtomicDirectory(self.out_dir, label, make_parents=True,
                                       exists_hint="token shards are never overwritten")
        self.tmp_dir = self._output.tmp
        try:
            self._tokens = open(self.tmp_dir / TOKENS, "wb")
        except BaseException as e:
            self._output.abort()
            raise self._output.user_error(e) from None
        self._offsets = [0]

    def add(self, token_ids) -> None:
        array = np.asarray(token_ids, dtype=self.dtype)
        self._tokens.write(array.tobytes())
        self._offsets.append(self._offsets[-1] + len(array))

    @property
    def num_documents(self) -> int:
        return len(self._offsets) - 1

    def close(self, sources: list[str]) -> Path:
        self._tokens.close()
        if self.num_documents == 0:
            self._output.abort()
            raise ValueError(f"no documents in {sources}: nothing written to {self.out_dir}")
        np.save(self.tmp_dir / OFFSETS, np.asarray(self._offsets, dtype=np.int64))
        meta = {"format": FORMAT, "dtype": np.dtype(self.dtype).name, "num_documents": self.num_documents,
                "num_tokens": self._offsets[-1], "sources": sources, **self.fingerprint}
        (self.tmp_dir / META).write_text(json.dumps(meta, indent=1) + "\n")
        return self._output.commit()

    def abort(self) -> None:
        self._tokens.close()
        self._output.abort()

    def user_error(self, exc: BaseException) -> BaseException:
        """``exc`` naming the output directory instead of its temporary."""
        return self._output.user_error(exc)


class TokenShard:
    """A written shard, memory-mapped: ``document(i)`` (or ``shard[i]``) is a view of document i's token ids. The
    one reader of shards: curriculum sources and ``training.dataset_path`` both open them here."""

    def __init__(self, path: Path | str, tokenizer=None) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / META).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a {FORMAT} token shard (format {meta.get('format')!r})")
        if tokenizer is not None:
            expected = tokenizer_fingerprint(tokenizer)
            mismatched = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
            if mismatched:
                raise ValueError(f"{self.path} was written with another tokenizer (shard, this run): {mismatched}")
        self.meta = meta
        self.offsets = np.load(self.path / OFFSETS, mmap_mode="r")
        self.tokens = np.memmap(self.path / TOKENS, dtype=np.dtype(meta["dtype"]), mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, index: int) -> np.ndarray:
        return self.tokens[int(self.offsets[index]):int(self.offsets[index + 1])]

    __getitem__ = document  # a sequence of documents, for the curriculum's and the text dataloader's readers

    def __getstate__(self) -> dict:
        # Worker processes reopen the files instead of receiving a copy of the mapped tokens.
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state: dict) -> None:
        self.path, self.meta = state["path"], state["meta"]
        self.offsets = np.load(self.path / OFFSETS, mmap_mode="r")
        self.tokens = np.memmap(self.path / TOKENS, dtype=np.dtype(self.meta["dtype"]), mode="r")
