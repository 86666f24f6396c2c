"""The Muon update for one matrix, apart from where its Newton-Schulz runs.

    buf    = lerp(buf, g, 1 - mu)                    (momentum; torch.optim.Muon's form)
    u      = lerp(g, buf, mu) if nesterov else buf   (handed on in bf16: Newton-Schulz starts with that cast)
    O      = NewtonSchulz(u)
    p     *= 1 - lr * wd                             (decoupled decay with the unadjusted lr)
    p     -= adjusted_lr * O

Motif's own optimizer writes momentum the classic way (buf = mu buf + g; nesterov g + mu buf). That buffer is the one
above divided by (1 - mu) at every step, so u differs only by that scale, which Newton-Schulz normalizes away: the
two forms give the same update.

On CUDA the two elementwise passes run as fused Triton kernels (``motif_titan.kernels.muon_elementwise``: one read
of each operand instead of one per torch op); elsewhere, and for layouts the kernels do not take, as the torch ops
written above.
"""

import math

import torch
from torch import Tensor

from motif_titan.config_checks import refuse

ADJUST_LR_RULES = ("match_rms_adamw", "original")


def check_adjust_lr(rule: str) -> None:
    if rule not in ADJUST_LR_RULES:
        refuse("optimizer.adjust_lr", rule, list(ADJUST_LR_RULES))


def _fused_kernels():
    from motif_titan.kernels import muon_elementwise  # imports triton: only where a CUDA tensor asks for it

    return muon_elementwise


def momentum_update(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """Advance ``buf`` in place and return, in bf16, the matrix Newton-Schulz orthogonalizes."""
    if buf.is_cuda and buf.is_contiguous() and grad.is_contiguous() and buf.shape == grad.shape:
        return _fused_kernels().muon_momentum(buf, grad, momentum, nesterov)
    buf.lerp_(grad, 1 - momentum)
    return (grad.lerp(buf, momentum) if nesterov else buf).bfloat16()


def adjusted_lr(lr: float, rule: str, shape: torch.Size | tuple[int, ...]) -> float:
    """'original': lr * sqrt(max(1, rows / cols)); 'match_rms_adamw' (Moonlight, used by Motif and Kimi):
    lr * 0.2 * sqrt(max(rows, cols)), so Muon reuses AdamW's lr and weight decay. ``rule`` passed
    ``check_adjust_lr`` when the optimizer was built."""
    rows, cols = shape[0], shape[1]
    if rule == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    return lr * 0.2 * math.sqrt(max(rows, cols))


def apply_update(param: Tensor, update: Tensor, lr: float, weight_decay: float, lr_adjusted: float) -> None:
    """Decoupled weight decay, then the orthogonalized step (``update`` may be bf16 and a transposed view;
    ``param`` keeps its dtype)."""
    if param.is_cuda and param.ndim == 2 and param.stride(1) == 1 and param.shape == update.shape:
        _fused_kernels().muon_decay_update(param, update, 1 - lr * weight_decay, lr_adjusted)
        return
    param.mul_(1 - lr * weight_decay)
    param.add_(update, alpha=-lr_adjusted)
