"""PolyNorm in plain PyTorch: the reference every fused kernel is checked against.

    norm(z)     = z / sqrt(mean(z^2) + eps)                      (over the last dim, no weight)
    PolyNorm(x) = w0 * norm(x^3) + w1 * norm(x^2) + w2 * norm(x) + b

``w0`` goes with the cubic term. Because norm(x^k) only needs mean(x^(2k)), one pass over a row gives the
three moments mean(x^2), mean(x^4), mean(x^6) (``polynorm_row_moments``); under tensor parallelism those are the
quantities to all-reduce before normalizing (``poly_norm_from_moments`` takes them). Everything is computed in fp32
(fp64 inputs stay fp64) and cast back to the input dtype once.
"""

import torch


def upcast(t: torch.Tensor) -> torch.Tensor:
    """t in at least fp32 (bf16 / fp16 -> fp32; fp32 / fp64 unchanged)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def polynorm_row_moments(x: torch.Tensor) -> torch.Tensor:
    """Return mean(x^2), mean(x^4), mean(x^6) over the last dim, stacked on a new last dim (>= fp32)."""
    x2 = upcast(x).square()
    x4 = x2.square()
    return torch.stack([x2.mean(-1), x4.mean(-1), (x4 * x2).mean(-1)], dim=-1)


def _combine(x, x2, x3, moments, weight, bias, eps: float) -> torch.Tensor:
    """The formula, given x, x^2, x^3 (>= fp32) and the row moments of x."""
    inv_rms = torch.rsqrt(moments + eps)  # [..., 3]: for x, x^2, x^3
    w = upcast(weight)
    return (
        w[0] * x3 * inv_rms[..., 2:3]
        + w[1] * x2 * inv_rms[..., 1:2]
        + w[2] * x * inv_rms[..., 0:1]
        + upcast(bias)
    )


def poly_norm_from_moments(
    x: torch.Tensor, moments: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """PolyNorm(x) in >= fp32, from the row moments mean(x^2), mean(x^4), mean(x^6) (stacked on the last dim, as
    ``polynorm_row_moments`` returns them) of the rows x belongs to: x may hold some channels of a longer row whose
    moments were reduced elsewhere (tensor parallelism)."""
    x = upcast(x)
    x2 = x * x
    return _combine(x, x2, x2 * x, moments, weight, bias, eps)


def _poly_norm_upcast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    # the moments after the powers: autograd then sums x's gradient in the order the training losses were
    # measured with (a different order moves a CPU run's losses in the 4th digit after 20 steps)
    x = upcast(x)
    x2 = x * x
    x3 = x2 * x
    return _combine(x, x2, x3, polynorm_row_moments(x), weight, bias, eps)


def poly_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """PolyNorm(x) over the last dim; ``weight`` has 3 entries (cubic, square, linear), ``bias`` 1."""
    return _poly_norm_upcast(x, weight, bias, eps).to(x.dtype)


def poly_norm_mul_reference(
    x: torch.Tensor, mul: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """PolyNorm(x) * mul, the gated FFN's activation, with the product also taken in fp32."""
    return (_poly_norm_upcast(x, weight, bias, eps) * upcast(mul)).to(x.dtype)
