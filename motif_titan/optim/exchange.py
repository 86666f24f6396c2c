"""Point-to-point movement of matrix blocks inside a shard group (Parallel Muon's steps 2 and 4).

``gather_full``: every rank sends its block of each matrix to the matrix's receivers (its owner, or every rank for
Distributed Muon), who assemble the full matrix. ``scatter_blocks``: each owner sends every rank its block of the
result. Payloads are bf16, moved as raw bytes (uint8), which every backend supports.

The exchange is one batch of sends and receives (``batch_isend_irecv``: one grouped launch on NCCL) rather than an
all-to-all over packed buffers: a block whose rows span the full width (FSDP's Shard(0)) is received straight into
its rows of the full matrix and sent from where it lies, so nothing is packed or unpacked; only blocks that are not
contiguous (column shards, transposed results, blocks made of several runs of rows or columns) go through a
staging copy, and a rank's own block is copied locally.
Sends and receives between two ranks are posted in matrix order on both sides, which is how they are matched.
Both functions return a handle whose ``wait()`` finishes the exchange, so a caller can overlap the next chunk's
communication with this chunk's Newton-Schulz.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from .shard_layout import Block, ShardLayout, read_block, write_block


def block_of(matrix: Tensor, layout: ShardLayout, group_rank: int) -> Tensor:
    """Group rank ``group_rank``'s block of a full matrix (a view when the block is a rectangle, else a copy)."""
    return read_block(matrix, layout.blocks[group_rank])


def _as_bytes(t: Tensor) -> Tensor:
    """A contiguous tensor's storage as a flat uint8 view (flattened first: a contiguous tensor may carry any
    stride on a dim of size 1, which a dtype view refuses)."""
    return t.view(-1).view(torch.uint8)


@dataclass
class PendingExchange:
    works: list[dist.Work]
    finish: Callable[[], object]
    buffers: list[Tensor] = field(default_factory=list)  # kept alive until the transfers complete

    def wait(self):
        for work in self.works:
            work.wait()
        finish = self.finish
        self.works, self.finish, self.buffers = [], None, []
        return finish()


class _Batch:
    """Sends and receives of one exchange, with the staging copies for blocks that are not contiguous."""

    def __init__(self, group: dist.ProcessGroup):
        self.group, self.ops, self.buffers, self.unstage = group, [], [], []

    def send(self, block: Tensor, dest: int) -> None:
        if block.numel() == 0:
            return
        payload = block.to(torch.bfloat16).contiguous()
        self.buffers.append(payload)
        self.ops.append(dist.P2POp(dist.isend, _as_bytes(payload), group=self.group, group_peer=dest))

    def recv(self, matrix: Tensor, block: Block, src: int) -> None:
        """Receive ``block`` of ``matrix`` from ``src``: straight into place when it is a contiguous slice."""
        if block.numel == 0:
            return
        target = read_block(matrix, block) if block.is_rectangle else None
        if target is not None and target.is_contiguous():
            landing = target
        else:
            landing = torch.empty(block.shape, dtype=matrix.dtype, device=matrix.device)
            self.unstage.append((matrix, block, landing))
        self.buffers.append(landing)
        self.ops.append(dist.P2POp(dist.irecv, _as_bytes(landing), group=self.group, group_peer=src))

    def recv_block(self, target: Tensor, src: int) -> None:
        """Receive a whole (contiguous) local block from ``src``."""
        if target.numel():
            self.buffers.append(target)
            self.ops.append(dist.P2POp(dist.irecv, _as_bytes(target), group=self.group, group_peer=src))

    def start(self, finish: Callable[[], object]) -> PendingExchange:
        works = dist.batch_isend_irecv(self.ops) if self.ops else []

        def unstage_then_finish():
            for matrix, block, landing in self.unstage:
                write_block(matrix, block, landing)
            return finish()

        return PendingExchange(works, unstage_then_finish, self.buffers)


def gather_full(local_blocks: Sequence[Tensor], layouts: Sequence[ShardLayout], receivers: Sequence[list[int]],
                group: dist.ProcessGroup, device: torch.device) -> PendingExchange:
    """Matrix i's blocks go to the group ranks ``receivers[i]``; ``wait()`` returns {i: full bf16 matrix} for the
    matrices this rank receives."""
    me, size = dist.get_rank(group), dist.get_world_size(group)
    batch = _Batch(group)
    full: dict[int, Tensor] = {}
    for i, layout in enumerate(layouts):
        for dest in receivers[i]:
            if dest != me:
                batch.send(local_blocks[i], dest)
        if me in receivers[i]:
            full[i] = torch.empty(layout.global_shape, dtype=torch.bfloat16, device=device)
            for src in range(size):
                if src == me:
                    write_block(full[i], layout.blocks[me], local_blocks[i])
                else:
                    batch.recv(full[i], layout.blocks[src], src)
    return batch.start(lambda: full)


def scatter_blocks(results: dict[int, Tensor], layouts: Sequence[ShardLayout], owners: Sequence[int],
                   group: dist.ProcessGroup, device: torch.device) -> PendingExchange:
    """Owner of matrix i (``results[i]`` on it) sends each rank its block; ``wait()`` returns this rank's block of
    every matrix, in order."""
    me, size = dist.get_rank(group), dist.get_world_size(group)
    batch = _Batch(group)
    blocks: list[Tensor] = []
    for i, layout in enumerate(layouts):
        if owners[i] == me:
            for dest in range(size):
                if dest != me:
                    batch.send(block_of(results[i], layout, dest), dest)
            blocks.append(block_of(results[i], layout, me))
        else:
            blocks.append(torch.empty(layout.blocks[me].shape, dtype=torch.bfloat16, device=device))
            batch.recv_block(blocks[-1], owners[i])
    return batch.start(lambda: blocks)
