"""Width expansion by hypercloning (Samragh et al. 2024, "Scaling Smart"), symmetric and noisy variants.

With width factor m the residual stream of the upscaled model is the source's stream tiled m times,
[x, x, ..., x], and every FFN hidden activation is tiled the same way. The width rules (``hyperclone_tensor``;
which parameter follows which is ``UPSCALE_RULES`` in upscaler.py):

- ``tile_columns`` (embedding, vocab x dim): rows tiled along the hidden dim, no division, so the stream starts
  as a tile;
- ``divide_columns`` (a linear whose input is tiled and output is not: wq, wk, wv, output head) and
  ``divide_columns_tile_rows`` (input and output tiled: w1, w3, w2): column blocks W / m, so m equal input copies
  sum back to W x, rows tiled too when the output is tiled;
- ``tile_rows`` (wo): its input (the concatenated signal heads) is not widened (head counts and head_dim stay),
  only its output rows are tiled, without division;
- ``tile`` (RMSNorm weights: attention_norm, ffn_norm, final norm): tiled. mean([x, .., x]^2) = mean(x^2) and eps
  is added to that mean, so the normalization is exact;
- ``keep``: PolyNorm normalizes each power by the mean over the FFN hidden dim (eps added to the mean too), so it
  is exact with its 3 weights and bias kept; subln weight (per head, 2 * head_dim) and the four lambda vectors
  (head_dim) are unchanged as heads are not widened, and the layer's lambda, and so lambda_init, is kept.

Noisy variant: every column block of a linear with tiled input gets its own noise N_t, with the m blocks' noises
summing to zero (for m = 2 that is +N / -N). The m input copies being equal, the noise cancels exactly in real
arithmetic while breaking the symmetry between the copies for training. Noise power is set by an SNR in dB
against the power of W / m; every output row block draws fresh noise.
"""

import math
import zlib

import torch


def noise_generator(seed: int, key: str) -> torch.Generator:
    """A generator per (seed, tensor name), so every tensor's noise is reproducible whatever order tensors are
    produced in."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def zero_sum_noise(copies: int, shape: tuple[int, ...], std: float, generator: torch.Generator,
                   dtype: torch.dtype) -> torch.Tensor:
    """``copies`` noise blocks of ``shape`` with elementwise std ``std`` that sum to exactly zero over the copies
    (up to rounding): Gaussian draws minus their mean, rescaled for the variance the centering removes."""
    noise = torch.randn((copies, *shape), generator=generator, dtype=torch.float64)
    noise = (noise - noise.mean(dim=0, keepdim=True)) * math.sqrt(copies / (copies - 1)) * std
    return noise.to(dtype)


def noise_std(block: torch.Tensor, snr_db: float) -> float:
    """Noise std giving ``snr_db`` = 10 log10(signal power / noise power) against the block W / m."""
    power = block.double().square().mean().item()
    return math.sqrt(power) * 10.0 ** (-snr_db / 20.0)


def hyperclone_linear(weight: torch.Tensor, in_factor: int, out_factor: int, noise_snr_db: float | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(out, in) -> (out * out_factor, in * in_factor): rows tiled, column blocks W / in_factor (+ zero-sum noise
    over the column blocks when ``noise_snr_db`` is set and in_factor > 1)."""
    block = weight.repeat(out_factor, 1) / in_factor
    if noise_snr_db is None or in_factor == 1:
        return block.repeat(1, in_factor)
    noise = zero_sum_noise(in_factor, tuple(block.shape), noise_std(block, noise_snr_db), generator, block.dtype)
    return torch.cat([block + noise[t] for t in range(in_factor)], dim=1)


def hyperclone_tensor(rule: str, tensor: torch.Tensor, width_factor: int, noise_snr_db: float | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The width-cloned version of one tensor, by its width ``rule`` (see the module docstring)."""
    m = width_factor
    if rule == "tile_columns":
        return tensor.repeat(1, m)
    if rule == "divide_columns_tile_rows":
        return hyperclone_linear(tensor, m, m, noise_snr_db, generator)
    if rule == "divide_columns":
        return hyperclone_linear(tensor, m, 1, noise_snr_db, generator)
    if rule == "tile_rows":
        return tensor.repeat(m, 1)
    if rule == "tile":
        return tensor.repeat(m)
    if rule == "keep":
        return tensor
    raise ValueError(f"hypercloning: unknown width rule {rule!r}")
