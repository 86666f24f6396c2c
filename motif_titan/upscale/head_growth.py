"""GDA head growth: from r to R = c * r signal heads per group, keeping the noise heads and the kv heads.

GDA's q heads come in groups [signal_0 .. signal_{r-1}, noise] (one group per noise head); signal head s of group
g reads K1/V1 = kv head 2g and V2 = kv head 2g + 1, and the group's noise map. Growing the ratio copies every
signal head c times, in place: source signal head s becomes target signal heads s*c .. s*c + c - 1, all in the
same group, so each copy computes exactly the original head's output (same q rows, same K1/V pair, same noise
map, same lambda, same subln). wo's columns of the c copies are the original head's columns divided by c, so the
copies sum back to the original contribution. The optional noise (as in hypercloning) is added to the c copies'
wo columns with a zero sum over the copies, which cancels because the copies' outputs are equal.
"""

import torch

from .hypercloning import noise_std, zero_sum_noise


def grow_wq(wq: torch.Tensor, n_groups: int, ratio: int, head_dim: int, copies: int) -> torch.Tensor:
    """wq rows (groups x (ratio + 1) heads x head_dim, dim) -> (groups x (ratio * copies + 1) heads x head_dim, dim)."""
    heads = wq.view(n_groups, ratio + 1, head_dim, -1)
    signal = heads[:, :ratio].repeat_interleave(copies, dim=1)
    return torch.cat([signal, heads[:, ratio:]], dim=1).reshape(-1, wq.shape[1])


def grow_wo(wo: torch.Tensor, head_dim: int, copies: int, noise_snr_db: float | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """wo columns (dim, signal heads x 2 head_dim) -> (dim, signal heads x copies x 2 head_dim), each copy's block
    divided by ``copies`` (+ zero-sum noise over the copies)."""
    dim = wo.shape[0]
    heads = wo.view(dim, -1, 1, 2 * head_dim) / copies
    grown = heads.expand(-1, -1, copies, -1)
    if noise_snr_db is not None and copies > 1:
        noise = zero_sum_noise(copies, tuple(heads.shape), noise_std(heads, noise_snr_db), generator, wo.dtype)
        grown = grown + torch.cat(list(noise), dim=2)
    return grown.reshape(dim, -1)


def grow_heads_tensor(rule: str, tensor: torch.Tensor, n_groups: int, ratio: int, head_dim: int, copies: int,
                      noise_snr_db: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The head-grown version of one tensor by its heads ``rule``: ``copy_signal_heads`` (wq rows),
    ``share_signal_heads`` (wo columns) or ``keep`` (everything else: kv heads, noise maps, lambda, subln)."""
    if rule == "keep":
        return tensor
    if rule == "copy_signal_heads":
        return grow_wq(tensor, n_groups, ratio, head_dim, copies)
    if rule == "share_signal_heads":
        return grow_wo(tensor, head_dim, copies, noise_snr_db, generator)
    raise ValueError(f"GDA head growth: unknown heads rule {rule!r}")
