"""Where the pieces of a sharded matrix live: read at run time from a DTensor's mesh and placements.

A matrix's *shard group* is the set of ranks that hold different pieces of it: the mesh dims with a ``Shard`` or
``_StridedShard`` placement (FSDP's dp_shard, TP's tp, or both). Mesh dims with ``Replicate`` (HSDP's
dp_replicate) hold copies; every replica group runs the same exchange on the same data.

For every rank of the shard group the layout records the global rows and columns it holds, as runs of consecutive
indices in the order the local tensor stores them. The indices follow DTensor's left-to-right reading of the
placements, the same reading ``full_tensor()`` and DCP use:
- ``Shard(d)`` splits the indices held so far along d into mesh-size chunks the way ``torch.chunk`` does (chunks of
  ceil(n / size); trailing ranks may get fewer or none: FSDP2's uneven and empty shards);
- ``_StridedShard(d, sf)`` (FSDP2 sharding a parameter that TP sharded on the same dim first) splits the indices
  into ``sf`` pieces, each piece into mesh-size chunks, and gives rank r chunk r of every piece, concatenated.
So TP 2 x FSDP 2 on 10 rows, ``(_StridedShard(0, sf=2), Shard(0))`` on (dp_shard, tp), puts rows 0-2 on (0, 0),
3-4 on (1, 0), 5-7 on (0, 1) and 8-9 on (1, 1): each rank's rows are one run here, but nothing below assumes it.
"""

import functools
import itertools
from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.placement_types import _StridedShard

Runs = tuple[tuple[int, int], ...]  # (first global index, length) of each run, in local storage order
SUPPORTED_PLACEMENTS = "Shard(0), Shard(1), _StridedShard(0 or 1) and Replicate, on any number of mesh dims"


@dataclass(frozen=True)
class Block:
    """The global rows x columns one rank holds: its local tensor is ``rows`` x ``cols`` in run order."""

    rows: Runs
    cols: Runs

    @property
    def shape(self) -> tuple[int, int]:
        return sum(n for _, n in self.rows), sum(n for _, n in self.cols)

    @property
    def numel(self) -> int:
        rows, cols = self.shape
        return rows * cols

    @property
    def is_rectangle(self) -> bool:
        """One run of rows and one of columns: the block is a plain slice (a view) of the full matrix."""
        return len(self.rows) <= 1 and len(self.cols) <= 1

    def pieces(self):
        """(full-matrix slices, local-tensor slices) of every rectangle the block is made of."""
        local_row = 0
        for r0, nr in self.rows:
            local_col = 0
            for c0, nc in self.cols:
                yield ((slice(r0, r0 + nr), slice(c0, c0 + nc)),
                       (slice(local_row, local_row + nr), slice(local_col, local_col + nc)))
                local_col += nc
            local_row += nr

    def local_rows_of(self, start: int, stop: int) -> list[slice]:
        """The local row slices that hold global rows [start, stop)."""
        out, local = [], 0
        for r0, nr in self.rows:
            lo, hi = max(start, r0), min(stop, r0 + nr)
            if lo < hi:
                out.append(slice(local + lo - r0, local + hi - r0))
            local += nr
        return out


def _span(runs: Runs) -> slice:
    return slice(runs[0][0], runs[0][0] + runs[0][1]) if runs else slice(0, 0)


def read_block(matrix: Tensor, block: Block) -> Tensor:
    """The block's values from a full matrix (a view when the block is a rectangle)."""
    if block.is_rectangle:
        return matrix[_span(block.rows), _span(block.cols)]
    out = matrix.new_empty(block.shape)
    for full_slices, local_slices in block.pieces():
        out[local_slices] = matrix[full_slices]
    return out


def write_block(matrix: Tensor, block: Block, values: Tensor) -> None:
    """Write a local block's values into their places in a full matrix."""
    for full_slices, local_slices in block.pieces():
        matrix[full_slices].copy_(values[local_slices])


@dataclass(frozen=True)
class ShardLayout:
    global_shape: tuple[int, int]
    group: dist.ProcessGroup | None  # None: the whole matrix is local
    blocks: tuple[Block, ...]  # indexed by rank in ``group``
    group_rank: int

    @property
    def group_size(self) -> int:
        return len(self.blocks)


def local_tensor(t: Tensor) -> Tensor:
    """This rank's piece of a DTensor; a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def _is_shard(placement) -> bool:
    """Shard or _StridedShard (a subclass of Shard in some torch releases, not in others)."""
    return isinstance(placement, (Shard, _StridedShard))


def _chunk(runs: Runs, size: int, rank: int) -> Runs:
    """torch.chunk's split of the indices in ``runs`` into ``size`` chunks: chunk ``rank`` (empty past the last
    chunk), computed on the runs (O(number of runs), never per index)."""
    total = sum(n for _, n in runs)
    step = -(-total // size)
    lo, hi = min(rank * step, total), min((rank + 1) * step, total)
    out, seen = [], 0
    for start, n in runs:
        a, b = max(lo, seen), min(hi, seen + n)
        if a < b:
            out.append((start + a - seen, b - a))
        seen += n
    return _merged(out)


def _merged(runs) -> Runs:
    """Adjacent runs joined: (0, 3), (3, 2) -> (0, 5)."""
    out: list[list[int]] = []
    for start, n in runs:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1][1] += n
        else:
            out.append([start, n])
    return tuple((start, n) for start, n in out)


def held_runs(global_shape, mesh_shape, coordinate, placements) -> list[Runs]:
    """For each tensor dim, the runs of global indices the rank at mesh ``coordinate`` holds, in local order."""
    held = [((0, n),) if n else () for n in global_shape]
    for mesh_dim, placement in enumerate(placements):
        size, rank = mesh_shape[mesh_dim], coordinate[mesh_dim]
        if isinstance(placement, _StridedShard):
            current, sf = held[placement.dim], placement.split_factor
            held[placement.dim] = _merged(run for j in range(sf) for run in _chunk(_chunk(current, sf, j), size, rank))
        elif isinstance(placement, Shard):
            held[placement.dim] = _chunk(held[placement.dim], size, rank)
    return held


def held_indices(global_shape, mesh_shape, coordinate, placements) -> list[list[int]]:
    """``held_runs`` written out index by index (for tests and small tensors)."""
    return [[start + i for start, n in runs for i in range(n)]
            for runs in held_runs(global_shape, mesh_shape, coordinate, placements)]


@functools.lru_cache(maxsize=None)
def _block_at(global_shape: tuple, mesh_shape: tuple, coordinate: tuple, placements: tuple) -> Block:
    rows, cols = held_runs(global_shape, mesh_shape, coordinate, placements)
    return Block(rows, cols)


def check_placements(tensor: Tensor, name: str = "parameter") -> None:
    """Raise (naming the parameter, its placements and the supported ones) if Muon cannot read its layout."""
    if not isinstance(tensor, DTensor):
        return
    for placement in tensor.placements:
        supported = isinstance(placement, Replicate) or _is_shard(placement) and placement.dim in (0, 1)
        if not supported:
            raise NotImplementedError(
                f"Muon: {name} has placements {tuple(tensor.placements)} on mesh "
                f"{tensor.device_mesh.mesh_dim_names}; {placement} is not supported. Supported: "
                f"{SUPPORTED_PLACEMENTS} (FSDP, HSDP, TP, TP x FSDP / HSDP, with or without PP and CP)"
            )


def local_block(tensor: Tensor) -> Block:
    """The rows and columns of the global matrix this rank holds (no process group needed)."""
    if not isinstance(tensor, DTensor):
        rows, cols = tensor.shape
        return Block(((0, rows),) if rows else (), ((0, cols),) if cols else ())
    check_placements(tensor)
    return _block_at(tuple(tensor.shape), tuple(tensor.device_mesh.mesh.shape),
                     tuple(tensor.device_mesh.get_coordinate()), tuple(tensor.placements))


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


def shard_layout(tensor: Tensor, name: str = "parameter") -> ShardLayout:
    """The layout of a 2-D parameter (or its gradient): a plain tensor, or a DTensor with Shard / _StridedShard /
    Replicate placements. The block computed for this rank is checked against the local tensor's shape."""
    if not isinstance(tensor, DTensor):
        return ShardLayout(tuple(tensor.shape), None, (local_block(tensor),), 0)
    check_placements(tensor, name)
    mesh, placements = tensor.device_mesh, tensor.placements
    global_shape = tuple(tensor.shape)
    shard_dims = tuple(d for d, p in enumerate(placements) if _is_shard(p))
    if not shard_dims:
        return ShardLayout(global_shape, None, (local_block(tensor),), 0)
    group = _shard_group(mesh, shard_dims)
    my_coordinate = mesh.get_coordinate()
    mesh_shape = tuple(mesh.mesh.shape)
    blocks: list[Block | None] = [None] * dist.get_world_size(group)
    for shard_coordinate in itertools.product(*(range(mesh_shape[d]) for d in shard_dims)):
        coordinate = list(my_coordinate)
        for d, c in zip(shard_dims, shard_coordinate):
            coordinate[d] = c
        global_rank = int(mesh.mesh[tuple(coordinate)])
        blocks[dist.get_group_rank(group, global_rank)] = _block_at(global_shape, mesh_shape, tuple(coordinate),
                                                                   tuple(placements))
    layout = ShardLayout(global_shape, group, tuple(blocks), dist.get_rank(group))
    mine = layout.blocks[layout.group_rank].shape
    if tuple(tensor.to_local().shape) != mine:
        raise NotImplementedError(
            f"Muon: {name} (global shape {global_shape}, placements {tuple(placements)}) holds a local tensor of "
            f"shape {tuple(tensor.to_local().shape)} on this rank, but its placements give {mine}: the layout "
            f"cannot be read. Supported: {SUPPORTED_PLACEMENTS}"
        )
    return layout
