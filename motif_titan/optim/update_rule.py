"""The Muon update for one matrix, apart from where its Newton-Schulz runs.

    buf    = lerp(buf, g, 1 - mu)                    (momentum; torch.optim.Muon's form)
    u      = lerp(g, buf, mu) if nesterov else buf
    O      = NewtonSchulz(u)
    p     *= 1 - lr * wd                             (decoupled decay with the unadjusted lr)
    p     -= adjusted_lr * O

Motif's own optimizer writes momentum the classic way (buf = mu buf + g; nesterov g + mu buf). That buffer is the one
above divided by (1 - mu) at every step, so u differs only by that scale, which Newton-Schulz normalizes away: the
two forms give the same update.
"""

import math

import torch
from torch import Tensor

ADJUST_LR_RULES = ("match_rms_adamw", "original")


def momentum_update(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """Advance ``buf`` in place and return the matrix Newton-Schulz orthogonalizes."""
    buf.lerp_(grad, 1 - momentum)
    return grad.lerp(buf, momentum) if nesterov else buf


def adjusted_lr(lr: float, rule: str, shape: torch.Size | tuple[int, ...]) -> float:
    """'original': lr * sqrt(max(1, rows / cols)); 'match_rms_adamw' (Moonlight, used by Motif and Kimi):
    lr * 0.2 * sqrt(max(rows, cols)), so Muon reuses AdamW's lr and weight decay."""
    rows, cols = shape[0], shape[1]
    if rule == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"optimizer.adjust_lr = {rule!r}; allowed: {ADJUST_LR_RULES}")


def apply_update(param: Tensor, update: Tensor, lr: float, weight_decay: float, lr_adjusted: float) -> None:
    """Decoupled weight decay, then the orthogonalized step (``update`` may be bf16; ``param`` keeps its dtype)."""
    param.mul_(1 - lr * weight_decay)
    param.add_(update, alpha=-lr_adjusted)
