"""One domain's documents as a stream for one rank: disjoint per stream, reshuffled every epoch, packed.

Stream k of n (a DP rank, or a dataloader worker of a DP rank) reads the documents at positions k, k + n,
k + 2n, ... of the epoch's permutation (seeded by (seed, domain, epoch)), so streams never share a document in an
epoch; when its share is used up the next epoch begins (the data is repeated; the metric
``curriculum/epoch/<domain>`` shows it). :class:`PackedDocumentStream` concatenates the documents (each BOS ... EOS) and cuts windows of any
requested length from the front; what is left stays for the next window. State: epoch, position, leftover.
"""

from typing import Any

import numpy as np

from .document_sources import DomainDocuments, document_tokens


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


class PackedDocumentStream:
    """Windows of a domain's token stream (documents with BOS and EOS, back to back)."""

    def __init__(self, cursor: DocumentCursor, tokenizer) -> None:
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
