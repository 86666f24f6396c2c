"""All-to-all movement of matrix blocks inside a shard group (Parallel Muon's steps 2 and 4).

``gather_full``: every rank sends its block of each matrix to the matrix's receivers (its owner, or every rank for
Distributed Muon), who assemble the full matrix. ``scatter_blocks``: each owner sends every rank its block of the
result. Payloads are bf16, moved as raw bytes (uint8), which every backend supports. Both return a handle whose
``wait()`` finishes the exchange, so a caller can overlap the next chunk's communication with this chunk's
Newton-Schulz.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .shard_layout import ShardLayout


def block_of(matrix: Tensor, layout: ShardLayout, group_rank: int) -> Tensor:
    r0, rows, c0, cols = layout.blocks[group_rank]
    return matrix[r0:r0 + rows, c0:c0 + cols]


@dataclass
class PendingExchange:
    work: dist.Work | None
    finish: Callable[[], object]

    def wait(self):
        if self.work is not None:
            self.work.wait()
        finish, self.work, self.finish = self.finish, None, None  # drop the send/receive buffers once done
        return finish()


def _all_to_all(send: list[Tensor], recv_sizes: list[int], group: dist.ProcessGroup, device) -> tuple:
    send_flat = torch.cat([t.reshape(-1).to(device=device, dtype=torch.bfloat16) for t in send])
    recv_flat = torch.empty(sum(recv_sizes), dtype=torch.bfloat16, device=device)
    # bytes on the wire: every backend moves uint8 (gloo has no bf16 or int16 all-to-all)
    work = dist.all_to_all_single(
        recv_flat.view(torch.uint8), send_flat.view(torch.uint8),
        output_split_sizes=[2 * n for n in recv_sizes], input_split_sizes=[2 * t.numel() for t in send],
        group=group, async_op=True,
    )
    return work, recv_flat


def gather_full(local_blocks: Sequence[Tensor], layouts: Sequence[ShardLayout], receivers: Sequence[list[int]],
                group: dist.ProcessGroup, device: torch.device) -> PendingExchange:
    """Matrix i's blocks go to the group ranks ``receivers[i]``; ``wait()`` returns {i: full bf16 matrix} for the
    matrices this rank receives."""
    me = dist.get_rank(group)
    size = dist.get_world_size(group)
    send = []
    for dest in range(size):
        parts = [local_blocks[i].reshape(-1) for i in range(len(layouts)) if dest in receivers[i]]
        send.append(torch.cat(parts) if parts else torch.empty(0, dtype=torch.bfloat16, device=device))
    mine = [i for i in range(len(layouts)) if me in receivers[i]]
    recv_sizes = [sum(layouts[i].block_numel(src) for i in mine) for src in range(size)]
    work, recv_flat = _all_to_all(send, recv_sizes, group, device)

    def assemble() -> dict[int, Tensor]:
        full = {i: torch.empty(layouts[i].global_shape, dtype=torch.bfloat16, device=device) for i in mine}
        offset = 0
        for src in range(size):
            for i in mine:
                n = layouts[i].block_numel(src)
                block_of(full[i], layouts[i], src).copy_(
                    recv_flat[offset:offset + n].view(layouts[i].blocks[src][1], layouts[i].blocks[src][3]))
                offset += n
        return full

    return PendingExchange(work, assemble)


def scatter_blocks(results: dict[int, Tensor], layouts: Sequence[ShardLayout], owners: Sequence[int],
                   group: dist.ProcessGroup, device: torch.device) -> PendingExchange:
    """Owner of matrix i (``results[i]`` on it) sends each rank its block; ``wait()`` returns this rank's block of
    every matrix, in order."""
    me = dist.get_rank(group)
    size = dist.get_world_size(group)
    owned = sorted(results)
    send = []
    for dest in range(size):
        parts = [block_of(results[i], layouts[i], dest).reshape(-1) for i in owned]
        send.append(torch.cat(parts) if parts else torch.empty(0, dtype=torch.bfloat16, device=device))
    recv_sizes = [sum(layouts[i].block_numel(me) for i in range(len(layouts)) if owners[i] == src)
                  for src in range(size)]
    work, recv_flat = _all_to_all(send, recv_sizes, group, device)

    def split() -> list[Tensor]:
        blocks: list[Tensor | None] = [None] * len(layouts)
        offset = 0
        for src in range(size):
            for i in range(len(layouts)):
                if owners[i] != src:
                    continue
                _, rows, _, cols = layouts[i].blocks[me]
                blocks[i] = recv_flat[offset:offset + rows * cols].view(rows, cols)
                offset += rows * cols
        return blocks

    return PendingExchange(work, split)
