"""Depth expansion by LLaMA-Pro block insertion (Wu et al. 2024), with GDA's layer-index terms compensated.

From L to L' layers, with split = L / (L' - L), a copy of every split-th source layer is inserted right after it.
The copy's output projections (attention wo, FFN w2) are zero, so the inserted block is the identity.

GDA depends on the layer index through lambda_init(i) = 0.8 - 0.6 exp(-0.3 (i - 1)), which is recomputed from the
index (never stored). A source layer i that lands at target index i' != i would change in two places:
- lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init: the stored vectors are re-solved so that
  exp(lq1' . lk1') - exp(lq2' . lk2') = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init(i) - lambda_init(i'),
  which keeps the full lambda unchanged (exact in real arithmetic, computed in float64);
- the (1 - lambda_init) scale after subln: the subln weight is multiplied by (1 - lambda_init(i)) /
  (1 - lambda_init(i')) (1 - lambda_init lies in [0.2, 1.01], never zero).
Inserted copies get the same treatment, so they start computing their original's attention pattern.

The depth rules (``depth_adjust_tensor``; which parameter follows which is ``UPSCALE_RULES`` in upscaler.py):
``zero_in_identity`` (wo, w2), ``rescale_subln``, ``shift_lambda`` (the four vectors of a layer, together:
``shift_lambda_vectors``) and ``keep``.
"""

import math

import torch

from .plan import TargetLayer

# GroupedDiffAttention's lambda vectors, in the order shift_lambda_vectors takes them
LAMBDA_VECTORS = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")


def _with_dot(q: torch.Tensor, k: torch.Tensor, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(q', k') with q' . k' = target, moving q along k (or k along q when k is zero)."""
    gap = target - torch.dot(q, k).item()
    kk, qq = torch.dot(k, k).item(), torch.dot(q, q).item()
    if kk > 0:
        return q + gap * k / kk, k
    if qq > 0:
        return q, k + gap * q / qq
    q, k = q.clone(), k.clone()
    q[0], k[0] = target, 1.0
    return q, k


def shift_lambda_vectors(lambda_q1: torch.Tensor, lambda_k1: torch.Tensor, lambda_q2: torch.Tensor,
                         lambda_k2: torch.Tensor, lambda_init_old: float, lambda_init_new: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectors whose lambda with ``lambda_init_new`` equals the given vectors' lambda with ``lambda_init_old``.
    Only one of the two exponential terms changes: the one whose new value stays positive (for a shift to a later
    layer, lambda_init grows and the second term absorbs it, which always works)."""
    q1, k1, q2, k2 = (v.double() for v in (lambda_q1, lambda_k1, lambda_q2, lambda_k2))
    if lambda_init_old == lambda_init_new:
        return q1, k1, q2, k2
    a, b = math.exp(torch.dot(q1, k1).item()), math.exp(torch.dot(q2, k2).item())
    wanted = a - b + lambda_init_old - lambda_init_new  # = new a - new b
    if a - wanted > 0:
        q2, k2 = _with_dot(q2, k2, math.log(a - wanted))
    else:
        q1, k1 = _with_dot(q1, k1, math.log(wanted + b))
    return q1, k1, q2, k2


def depth_adjust_tensor(rule: str, tensor: torch.Tensor, layer: TargetLayer) -> torch.Tensor:
    """The depth step for one tensor of target ``layer`` by its depth ``rule`` (``shift_lambda``: see
    ``shift_lambda_vectors``)."""
    if rule == "zero_in_identity":
        return torch.zeros_like(tensor) if layer.identity else tensor
    if rule == "rescale_subln":
        old, new = layer.lambda_init_shift
        return tensor * ((1.0 - old) / (1.0 - new)) if old != new else tensor
    if rule == "keep":
        return tensor
    raise ValueError(f"depth expansion: unknown depth rule {rule!r}")
