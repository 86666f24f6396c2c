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


def grow_heads_tensor(kind: str, tensor: torch.Tensor, n_groups: int, ratio: int, head_dim: int, copies: int,
                      noise_snr_db: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The head-grown version of one tensor (only wq and wo change); ``kind`` is its name below ``layers.{i}.``."""
    if copies == 1:
        return tensor
    if kind == "attention.wq.weight":
        return grow_wq(tensor, n_groups, ratio, head_dim, copies)
    if kind == "attention.wo.weight":
        return grow_wo(tensor, head_dim, copies, noise_snr_db, generator)
    return tensor


def grow_gda_heads(state_dict: dict[str, torch.Tensor], n_groups: int, ratio: int, head_dim: int,
                   target_ratio: int) -> dict[str, torch.Tensor]:
    """Grow every layer of a native state dict from ``ratio`` to ``target_ratio`` signal heads per group
    (symmetric: no noise)."""
    if target_ratio % ratio:
        raise ValueError(f"target_ratio = {target_ratio} must be a multiple of ratio = {ratio}")
    copies = target_ratio // ratio
    return {
        key: grow_heads_tensor(key.split(".", 2)[2], t, n_groups, ratio, head_dim, copies)
        if key.startswith("layers.") else t
        for key, t in state_dict.items()
    }
