"""Fused elementwise passes of a Muon step, in Triton: one read of each operand instead of one per torch op.

``muon_momentum``: buf <- lerp(buf, g, 1 - mu); returns bf16 u = lerp(g, buf, mu) (Nesterov) or bf16 buf.
  Unfused, torch reads buf and g, writes buf, reads g and buf again, writes an fp32 u, reads it, writes the bf16
  copy: 30 bytes per fp32 element. Fused: 14.
``muon_decay_update``: p <- p * decay - alpha * u, for an update ``u`` that may be a transposed view (Newton-Schulz
  returns tall matrices as X^T): a tiled kernel reads each operand along its own contiguous dimension.
  Unfused: 18 bytes per fp32 element; fused: 10.

Both compute in fp32 with torch's lerp formula (a + w (b - a) for w < 0.5, else b - (b - a)(1 - w)), so they agree
with the torch composition to fp32 rounding (FMA contraction may differ in the last bit). Every kernel here imports
only torch and triton; motif_titan.optim.update_rule decides when to call them (CUDA tensors) and keeps the torch
composition for everything else.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

MOMENTUM_BLOCK = 2048
UPDATE_TILE = (64, 64)


@triton.jit
def _lerp(a, b, w):
    return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))


@triton.jit
def _momentum_kernel(buf_ptr, grad_ptr, out_ptr, n, momentum, NESTEROV: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    buf = tl.load(buf_ptr + offsets, mask=mask).to(tl.float32)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    buf = _lerp(buf, grad, 1.0 - momentum)
    tl.store(buf_ptr + offsets, buf.to(buf_ptr.dtype.element_ty), mask=mask)
    if NESTEROV:
        # torch rounds buf to its dtype before the Nesterov lerp reads it back
        update = _lerp(grad, buf.to(buf_ptr.dtype.element_ty).to(tl.float32), momentum)
    else:
        update = buf
    tl.store(out_ptr + offsets, update.to(tl.bfloat16), mask=mask)


@triton.jit
def _decay_update_kernel(p_ptr, u_ptr, rows, cols, stride_pr, stride_ur, stride_uc, decay, alpha,
                         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    mask = (r < rows) & (c < cols)
    p = tl.load(p_ptr + r * stride_pr + c, mask=mask).to(tl.float32)
    u = tl.load(u_ptr + r * stride_ur + c * stride_uc, mask=mask).to(tl.float32)
    p = (p * decay).to(p_ptr.dtype.element_ty).to(tl.float32)  # torch rounds after the in-place decay
    p = p - alpha * u
    tl.store(p_ptr + r * stride_pr + c, p.to(p_ptr.dtype.element_ty), mask=mask)


def muon_momentum(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """Advance ``buf`` in place; return the bf16 matrix Newton-Schulz orthogonalizes. Contiguous tensors of one
    shape; ``buf`` fp32 or bf16."""
    if buf.shape != grad.shape or not (buf.is_contiguous() and grad.is_contiguous()):
        raise ValueError(f"muon_momentum needs contiguous buf and grad of one shape; got {tuple(buf.shape)} "
                         f"and {tuple(grad.shape)}")
    out = torch.empty(buf.shape, dtype=torch.bfloat16, device=buf.device)
    n = buf.numel()
    if n:
        _momentum_kernel[(triton.cdiv(n, MOMENTUM_BLOCK),)](buf, grad, out, n, float(momentum),
                                                            NESTEROV=bool(nesterov), BLOCK=MOMENTUM_BLOCK,
                                                            num_warps=8)
    return out


def muon_decay_update(param: Tensor, update: Tensor, decay: float, alpha: float) -> None:
    """``param = param * decay - alpha * update`` in place: ``param`` a row-major 2-D tensor (rows may be padded),
    ``update`` any 2-D strided view of the same shape (e.g. bf16, transposed)."""
    if param.ndim != 2 or param.shape != update.shape or param.stride(1) != 1:
        raise ValueError(f"muon_decay_update needs a row-major 2-D param and an update of its shape; got "
                         f"{tuple(param.shape)} (strides {param.stride()}) and {tuple(update.shape)}")
    rows, cols = param.shape
    if rows * cols == 0:
        return
    block_r, block_c = UPDATE_TILE
    grid = (triton.cdiv(rows, block_r), triton.cdiv(cols, block_c))
    _decay_update_kernel[grid](param, update, rows, cols, param.stride(0), update.stride(0), update.stride(1),
                               float(decay), float(alpha), BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4)
