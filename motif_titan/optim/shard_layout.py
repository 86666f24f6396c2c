"""Where the pieces of a sharded matrix live: found at run time from a DTensor's mesh and placements.

A matrix's *shard group* is the set of ranks that hold different pieces of it: the mesh dims with a ``Shard``
placement (FSDP's dp_shard, TP's tp, or both). Mesh dims with ``Replicate`` (HSDP's dp_replicate) hold copies; every
replica group runs the same exchange on the same data. For every rank of the shard group the layout records the
block (row offset, rows, col offset, cols) of the global matrix it holds: uneven and empty blocks included (FSDP2
shards dim 0 with torch.chunk semantics, so a matrix with fewer rows than ranks leaves some ranks empty).
"""

import itertools
from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset

Block = tuple[int, int, int, int]  # row offset, rows, col offset, cols


@dataclass(frozen=True)
class ShardLayout:
    global_shape: tuple[int, int]
    group: dist.ProcessGroup | None  # None: the whole matrix is local
    blocks: tuple[Block, ...]  # indexed by rank in ``group``
    group_rank: int

    @property
    def group_size(self) -> int:
        return len(self.blocks)

    def block_numel(self, group_rank: int) -> int:
        _, rows, _, cols = self.blocks[group_rank]
        return rows * cols


def local_tensor(t: Tensor) -> Tensor:
    """This rank's piece of a DTensor; a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


_GROUP_CACHE: dict[tuple, dist.ProcessGroup] = {}


def _shard_group(mesh, shard_dims: tuple[int, ...]) -> dist.ProcessGroup:
    """The process group over ``shard_dims`` of ``mesh`` that contains this rank (created once per mesh and dims;
    every rank creates every such group, in the same order)."""
    if len(shard_dims) == 1:
        return mesh.get_group(shard_dims[0])
    key = (tuple(mesh.mesh.flatten().tolist()), tuple(mesh.mesh.shape), shard_dims)
    if key not in _GROUP_CACHE:
        other_dims = [d for d in range(mesh.ndim) if d not in shard_dims]
        mine = None
        for other in itertools.product(*(range(mesh.mesh.shape[d]) for d in other_dims)):
            index = [slice(None)] * mesh.ndim
            for d, i in zip(other_dims, other):
                index[d] = i
            ranks = sorted(mesh.mesh[tuple(index)].flatten().tolist())
            group = dist.new_group(ranks)
            if dist.get_rank() in ranks:
                mine = group
        _GROUP_CACHE[key] = mine
    return _GROUP_CACHE[key]


def shard_layout(tensor: Tensor) -> ShardLayout:
    """The layout of a 2-D parameter (or its gradient): a plain tensor, or a DTensor sharded with ``Shard``."""
    if not isinstance(tensor, DTensor):
        rows, cols = tensor.shape
        return ShardLayout((rows, cols), None, ((0, rows, 0, cols),), 0)
    mesh, placements = tensor.device_mesh, tensor.placements
    for placement in placements:
        if type(placement) not in (Shard, Replicate):
            raise NotImplementedError(
                f"Muon: parameter placement {placement} is not supported (only Shard and Replicate; "
                f"placements {placements})"
            )
    global_shape = tuple(tensor.shape)
    shard_dims = tuple(d for d, p in enumerate(placements) if isinstance(p, Shard))
    if not shard_dims:
        return ShardLayout(global_shape, None, ((0, global_shape[0], 0, global_shape[1]),), 0)
    group = _shard_group(mesh, shard_dims)
    my_coordinate = mesh.get_coordinate()
    blocks: list[Block | None] = [None] * dist.get_world_size(group)
    for shard_coordinate in itertools.product(*(range(mesh.mesh.shape[d]) for d in shard_dims)):
        coordinate = list(my_coordinate)
        for d, c in zip(shard_dims, shard_coordinate):
            coordinate[d] = c
        global_rank = int(mesh.mesh[tuple(coordinate)])
        (rows, cols), (r0, c0) = _compute_local_shape_and_global_offset(
            global_shape, tuple(mesh.mesh.shape), coordinate, placements
        )
        blocks[dist.get_group_rank(group, global_rank)] = (r0, rows, c0, cols)
    return ShardLayout(global_shape, group, tuple(blocks), dist.get_rank(group))
