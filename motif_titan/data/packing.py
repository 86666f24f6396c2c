"""One domain's documents as a stream for one rank: disjoint per stream, reshuffled every epoch, packed.

Stream k of n (a DP rank, or a dataloader worker of a DP rank) reads the documents at positions k, k + n,
k + 2n, ... of the epoch's permutation (seeded by (seed, domain, epoch)), so streams never share a document in an
epoch; when its share is used up the next epoch begins (the data is repeated; the metric
``curriculum/epoch/<domain>`` shows it). A streamed domain (``streaming = true``) is read by
:class:`StreamCursor` instead: the same split into disjoint shares and the same epochs, in stream order.
:class:`PackedDocumentStream` concatenates the documents (each BOS ... EOS) and cuts windows of any requested length
from the front; what is left stays for the next window. State: epoch, position, leftover (and where in the stream).
"""

import copy
from typing import Any

import numpy as np

from .document_sources import DomainDocuments, StreamedDocuments, document_tokens


class DocumentCursor:
    """The next document of one stream's share of a domain, epoch after epoch."""

    def __init__(self, documents: DomainDocuments, seed: int, domain_index: int, stream: int,
                 num_streams: int) -> None:
        if len(documents) < num_streams:
            raise ValueError(f"{len(documents)} documents for {num_streams} streams (DP ranks x dataloader "
                             "workers): every stream needs at least one")
        self.documents = documents
        self.seed, self.domain_index = seed, domain_index
        self.stream, self.num_streams = stream, num_streams
        self.epoch = 0
        self.position = 0
        self._share_epoch = -1
        self._share: np.ndarray | None = None

    def share(self, epoch: int) -> np.ndarray:
        """Indices of this stream's documents in ``epoch``, in reading order."""
        if self._share_epoch != epoch:
            order = np.random.default_rng([self.seed, self.domain_index, epoch]).permutation(len(self.documents))
            self._share = order[self.stream::self.num_streams]
            self._share_epoch = epoch
        return self._share

    def next_document(self) -> Any:
        share = self.share(self.epoch)
        if self.position >= len(share):
            self.epoch += 1
            self.position = 0
            share = self.share(self.epoch)
        document = self.documents.document(int(share[self.position]))
        self.position += 1
        return document

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


STREAM_READ_BATCH = 64
"""Documents read from a streamed source at a time (``IterableDataset.iter(batch_size=...)``)."""


class StreamCursor:
    """The next document of one stream's share of a streamed domain, epoch after epoch.

    Split: stream k of n (n = DP ranks x dataloader workers, as for :class:`DocumentCursor`) reads
    ``datasets.distributed.split_dataset_by_node(source, rank=k, world_size=n)`` of every source. When the source's
    number of shards (its files) is a multiple of n, stream k gets whole shards (k, k + n, ...) and reads nothing
    else; otherwise every stream reads the source and keeps the documents at positions k, k + n, ... Either way the
    shares are disjoint and together are the source. The library is used rather than skipping of our own because it
    knows every builder's shard layout, reads only its own shards when it can, and its ``state_dict`` knows where a
    split stream is (what an exact and cheap resume needs). A split is read with ``IterableDataset.iter``, not
    ``iter(dataset)``: in a dataloader worker ``datasets``' own ``__iter__`` would split the shards among the workers
    a second time (and idle the workers left without one), while n already counts the workers.

    Order: stream order, the same every epoch, the sources one after another. There is no shuffle buffer: for an
    exact resume its content would have to be in every checkpoint (``datasets`` drops it when resuming), and a corpus
    big enough to stream is shuffled when it is written. The mixer still interleaves the domains item by item, with
    the same draws as for an in-memory domain (the draws never depend on the documents).

    Epochs: when the last source of the share is exhausted the share starts again from the first one (``epoch``
    + 1, the metric ``curriculum/epoch/<domain>``), as the in-memory path repeats its documents; a share without any
    document (fewer documents than streams) raises.

    State: epoch, position (documents taken in the epoch), source, ``datasets``' state of the split at the start of
    the batch being read and the offset into that batch. A restored cursor opens a fresh split at that state (the
    shards before it are skipped unread), reads the batch again and skips ``offset`` documents: it continues with
    exactly the documents the uninterrupted cursor would have taken.
    """

    def __init__(self, documents: StreamedDocuments, stream: int, num_streams: int) -> None:
        self.documents = documents
        self.stream, self.num_streams = stream, num_streams
        self.epoch = 0
        self.position = 0
        self.source = 0
        self._batch_start: dict | None = None
        """``datasets``' state of the split at the start of the current batch (None: the start of the source)."""
        self._batch: list | None = []
        """The current batch's documents; None: not read yet in this process (restored), read at _batch_start."""
        self._offset = 0
        self._reader = None
        """(split dataset, its batch iterator) of ``source`` once reading began in this process."""
        self._next_start: dict | None = None
        """``datasets``' state after the current batch: the start of the next one."""

    def next_document(self) -> Any:
        while self._batch is None or self._offset >= len(self._batch):
            self._read_batch()
        document = self._batch[self._offset]
        self._offset += 1
        self.position += 1
        return document

    def _read_batch(self) -> None:
        restored = self._batch is None
        if self._reader is None:
            dataset = self.documents.split(self.source, self.stream, self.num_streams)
            if self._batch_start is not None:
                dataset.load_state_dict(copy.deepcopy(self._batch_start))  # datasets keeps references into it
            self._reader = dataset, dataset.iter(batch_size=STREAM_READ_BATCH)
            self._next_start = self._batch_start
        dataset, batches = self._reader
        batch = next(batches, None)
        if batch is None:
            self._next_source()
            return
        self._batch_start, self._next_start = self._next_start, dataset.state_dict()
        self._batch = self.documents.documents(self.source, batch)
        if not restored:
            self._offset = 0

    def _next_source(self) -> None:
        self._reader, self._batch, self._batch_start, self._offset = None, [], None, 0
        self.source += 1
        if self.source < len(self.documents.sources):
            return
        if self.position == 0:
            raise ValueError(f"{self.documents.domain}: stream {self.stream} of {self.num_streams} (DP ranks x "
                             "training.dataloader.num_workers) got no document from the domain's sources; allowed: "
                             "sources with at least as many documents as streams")
        self.epoch, self.position, self.source = self.epoch + 1, 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "source": self.source,
                "batch_start": copy.deepcopy(self._batch_start), "offset": self._offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.source = state["epoch"], state["position"], state["source"]
        self._batch_start, self._offset = copy.deepcopy(state["batch_start"]), state["offset"]
        self._batch, self._reader = None, None

    def __getstate__(self) -> dict:
        """Picklable (a dataset sent to a worker process): an open reader is dropped, and the current batch is read
        again at its start after unpickling."""
        state = self.__dict__.copy()
        if state["_reader"] is not None:
            state["_reader"], state["_batch"] = None, None
        return state


class PackedDocumentStream:
    """Windows of a domain's token stream (documents with BOS and EOS, back to back)."""

    def __init__(self, cursor: DocumentCursor | StreamCursor, tokenizer) -> None:
        self.cursor = cursor
        self.tokenizer = tokenizer
        self.buffer = np.zeros(0, dtype=np.int64)

    def take(self, length: int) -> np.ndarray:
        """The next ``length`` tokens."""
        pieces, have = [self.buffer], len(self.buffer)
        while have < length:
            tokens = document_tokens(self.cursor.next_document(), self.tokenizer)
            pieces.append(tokens)
            have += len(tokens)
        stream = np.concatenate(pieces).astype(np.int64, copy=False) if len(pieces) > 1 else self.buffer
        window, self.buffer = stream[:length], stream[length:]
        return window

    def state_dict(self) -> dict:
        return {**self.cursor.state_dict(), "buffer": self.buffer.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.load_state_dict(state)
        self.buffer = np.asarray(state["buffer"], dtype=np.int64)
