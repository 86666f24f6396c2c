"""PolyNorm over an FFN hidden dim that tensor parallelism shards (w1 / w3 column-parallel).

PolyNorm normalizes x, x^2 and x^3 by the RMS over the whole hidden dim, so with the hidden dim split across the
tp group every rank first sums x^2, x^4, x^6 over its own channels, the three sums are all-reduced, and each rank
then normalizes its channels with the global moments (the reference's formula, ``poly_norm_from_moments``). The
all-reduce is differentiable (sum in both directions): every rank applies the summed moments to its own channels
only, so the gradient of one rank's partial sums is the sum of every rank's contribution. The fused Triton kernel
needs whole rows; this path is plain PyTorch in fp32 (torch.compile fuses it), one downcast at the end, like the
reference.
"""

import torch
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh

from motif_titan.kernels import poly_norm_from_moments, upcast
from motif_titan.model import PolyNorm
from motif_titan.model.model import local_replicated


def _all_reduce_sum(t: torch.Tensor, group_name: str) -> torch.Tensor:
    out = funcol.all_reduce(t, "sum", group_name)
    return out.wait() if isinstance(out, funcol.AsyncCollectiveTensor) else out


class _SumOverGroup(torch.autograd.Function):
    """y = sum over the group of t, on every rank; the gradient of t is the group sum of the gradients of y.
    The group travels by name (a string), which torch.compile traces as a constant."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group_name: str) -> torch.Tensor:
        ctx.group_name = group_name
        return _all_reduce_sum(t, group_name)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_reduce_sum(grad.contiguous(), ctx.group_name), None


def sum_over_group(t: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """Differentiable all-reduce (sum) over a 1-D device mesh."""
    return _SumOverGroup.apply(t, mesh.get_group().group_name)


class TensorParallelPolyNorm(PolyNorm):
    """PolyNorm(x) * mul for x, mul holding this rank's contiguous slice of the FFN hidden dim (equal slices on
    every rank of ``tp_mesh``). Same parameters (``weight``, ``bias``) as the PolyNorm it replaces."""

    def __init__(self, poly_norm: PolyNorm, tp_mesh: DeviceMesh):
        super().__init__(poly_norm.eps)
        self.weight = poly_norm.weight
        self.bias = poly_norm.bias
        self.tp_mesh = tp_mesh

    def forward(self, x: torch.Tensor, mul: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        x2 = xf * xf
        x4 = x2 * x2
        local_sums = torch.stack([x2.sum(-1), x4.sum(-1), (x4 * x2).sum(-1)], dim=-1)
        moments = sum_over_group(local_sums, self.tp_mesh) / (x.shape[-1] * self.tp_mesh.size())
        y = poly_norm_from_moments(x, moments, local_replicated(self.weight), local_replicated(self.bias), self.eps)
        return (y * upcast(mul)).to(x.dtype)
