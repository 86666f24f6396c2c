"""Public PolyNorm functions: autograd-capable, torch.compile-friendly, with a choice of backend.

    poly_norm(x, weight, bias, eps=1e-6, backend="auto")            PolyNorm(x) over the last dim
    poly_norm_mul(x, mul, weight, bias, eps=1e-6, backend="auto")   PolyNorm(x) * mul

backend: "auto" = the Triton kernels on CUDA tensors, the PyTorch reference elsewhere; "triton" = the Triton
kernels always (CPU tensors need ``TRITON_INTERPRET=1`` set before ``motif_titan`` is imported); "torch" = the
reference. fp32 accumulation; the output has the input's dtype.

The Triton path is four ``torch.library`` custom ops (``motif_titan::poly_norm_fwd`` / ``_bwd`` and the ``_mul``
pair) with fake implementations and registered autograd, so torch.compile traces them without graph breaks.
"""

import os

import torch
from torch import Tensor

from .polynorm_reference import poly_norm_mul_reference, poly_norm_reference
from . import polynorm_triton
from .polynorm_triton import _poly_norm_bwd_kernel, _poly_norm_fwd_kernel

BACKENDS = ("auto", "triton", "torch")


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _use_triton(x: Tensor, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r}; allowed: {BACKENDS}")
    if backend == "torch":
        return False
    if backend == "auto":
        return x.is_cuda
    if not x.is_cuda and not _triton_interpret():
        raise RuntimeError(
            "backend = 'triton' on a CPU tensor needs the Triton interpreter: set TRITON_INTERPRET=1 before "
            "motif_titan is imported, or use backend = 'auto' / 'torch'"
        )
    return True


def _check(x: Tensor, mul: Tensor | None, weight: Tensor, bias: Tensor) -> None:
    if weight.shape != (3,):
        raise ValueError(f"weight must have shape (3,) (cubic, square, linear), got {tuple(weight.shape)}")
    if bias.shape != (1,):
        raise ValueError(f"bias must have shape (1,), got {tuple(bias.shape)}")
    if mul is not None and mul.shape != x.shape:
        raise ValueError(f"mul must have the shape of x {tuple(x.shape)}, got {tuple(mul.shape)}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x needs a non-empty last dim, got shape {tuple(x.shape)}")


def _grid(rows: int, programs_per_sm: int, device: torch.device) -> tuple[int]:
    """One program per row, or at most ``programs_per_sm`` per SM (a CPU counts as one), each looping over rows."""
    if not programs_per_sm:
        return (rows,)
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return (min(rows, programs_per_sm * sms),)


def _rows(t: Tensor) -> Tensor:
    """(rows, N) view with a contiguous last dim."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(x: Tensor, mul: Tensor | None, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    shape = x.shape
    x2d = _rows(x)
    mul2d = _rows(mul) if mul is not None else None
    rows, n = x2d.shape
    y = torch.empty_like(x2d)
    rstd = torch.empty(rows, 3, dtype=torch.float32, device=x.device)
    block, single, num_warps, per_sm = polynorm_triton.fwd_launch_config(n, mul is not None)
    if rows:
        _poly_norm_fwd_kernel[_grid(rows, per_sm, x.device)](
            x2d, mul2d if mul2d is not None else x2d, y, weight, bias, rstd,
            x2d.stride(0), mul2d.stride(0) if mul2d is not None else 0, y.stride(0),
            rows, n, eps,
            HAS_MUL=mul is not None, BLOCK=block, SINGLE_PASS=single, num_warps=num_warps,
        )
    return y.view(shape), rstd.view(*shape[:-1], 3)


def _backward(grad_y: Tensor, x: Tensor, mul: Tensor | None, weight: Tensor, bias: Tensor,
              rstd: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """(grad_x, grad_mul, grad_weight_and_bias): the last is fp32 (dw0, dw1, dw2, db)."""
    shape = x.shape
    x2d, gy2d = _rows(x), _rows(grad_y)
    mul2d = _rows(mul) if mul is not None else None
    rows, n = x2d.shape
    grad_x = torch.empty_like(x2d)
    grad_mul = torch.empty_like(mul2d) if mul2d is not None else None
    partials = torch.empty(rows, 4, dtype=torch.float32, device=x.device)
    block, single, num_warps, per_sm = polynorm_triton.bwd_launch_config(n, mul is not None)
    if rows:
        _poly_norm_bwd_kernel[_grid(rows, per_sm, x.device)](
            gy2d, x2d, mul2d if mul2d is not None else x2d, grad_x,
            grad_mul if grad_mul is not None else grad_x, weight, bias, rstd.reshape(rows, 3), partials,
            gy2d.stride(0), x2d.stride(0), mul2d.stride(0) if mul2d is not None else 0, grad_x.stride(0),
            grad_mul.stride(0) if grad_mul is not None else 0,
            rows, n,
            HAS_MUL=mul is not None, BLOCK=block, SINGLE_PASS=single, num_warps=num_warps,
        )
    # one fixed-order reduction over rows: deterministic
    return grad_x.view(shape), grad_mul.view(shape) if grad_mul is not None else None, partials.sum(dim=0)


# ---- custom ops --------------------------------------------------------------------------------------------

@torch.library.custom_op("motif_titan::poly_norm_fwd", mutates_args=())
def poly_norm_fwd(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """PolyNorm forward: (y, rstd) with rstd[..., k] = 1 / rms(x^(k+1)) saved for the backward."""
    return _forward(x, None, weight, bias, eps)


@torch.library.custom_op("motif_titan::poly_norm_bwd", mutates_args=())
def poly_norm_bwd(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """PolyNorm backward: (grad_x, grad_weight_and_bias) with the last an fp32 (4,) tensor (dw0, dw1, dw2, db)."""
    grad_x, _, grad_weight_and_bias = _backward(grad_y, x, None, weight, bias, rstd)
    return grad_x, grad_weight_and_bias


@torch.library.custom_op("motif_titan::poly_norm_mul_fwd", mutates_args=())
def poly_norm_mul_fwd(x: Tensor, mul: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """PolyNorm(x) * mul forward: (y, rstd)."""
    return _forward(x, mul, weight, bias, eps)


@torch.library.custom_op("motif_titan::poly_norm_mul_bwd", mutates_args=())
def poly_norm_mul_bwd(grad_y: Tensor, x: Tensor, mul: Tensor, weight: Tensor, bias: Tensor,
                      rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """PolyNorm(x) * mul backward: (grad_x, grad_mul, grad_weight_and_bias)."""
    return _backward(grad_y, x, mul, weight, bias, rstd)


def _rstd_like(x: Tensor) -> Tensor:
    return x.new_empty(*x.shape[:-1], 3, dtype=torch.float32)


@poly_norm_fwd.register_fake
def _(x, weight, bias, eps):
    return torch.empty_like(x), _rstd_like(x)


def _weight_and_bias_grad_like(x: Tensor) -> Tensor:
    return x.new_empty(4, dtype=torch.float32)


@poly_norm_bwd.register_fake
def _(grad_y, x, weight, bias, rstd):
    return torch.empty_like(x), _weight_and_bias_grad_like(x)


@poly_norm_mul_fwd.register_fake
def _(x, mul, weight, bias, eps):
    return torch.empty_like(x), _rstd_like(x)


@poly_norm_mul_bwd.register_fake
def _(grad_y, x, mul, weight, bias, rstd):
    return torch.empty_like(x), torch.empty_like(mul), _weight_and_bias_grad_like(x)


def _setup_poly_norm(ctx, inputs, output):
    x, weight, bias, _ = inputs
    ctx.save_for_backward(x, weight, bias, output[1])


def _split_weight_and_bias_grad(grad_wb: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    return grad_wb[:3].to(weight.dtype), grad_wb[3:].to(bias.dtype)


def _poly_norm_grad(ctx, grad_y, _grad_rstd):
    x, weight, bias, rstd = ctx.saved_tensors
    grad_x, grad_wb = poly_norm_bwd(grad_y.contiguous(), x, weight, bias, rstd)
    return grad_x, *_split_weight_and_bias_grad(grad_wb, weight, bias), None


def _setup_poly_norm_mul(ctx, inputs, output):
    x, mul, weight, bias, _ = inputs
    ctx.save_for_backward(x, mul, weight, bias, output[1])


def _poly_norm_mul_grad(ctx, grad_y, _grad_rstd):
    x, mul, weight, bias, rstd = ctx.saved_tensors
    grad_x, grad_mul, grad_wb = poly_norm_mul_bwd(grad_y.contiguous(), x, mul, weight, bias, rstd)
    return grad_x, grad_mul, *_split_weight_and_bias_grad(grad_wb, weight, bias), None


poly_norm_fwd.register_autograd(_poly_norm_grad, setup_context=_setup_poly_norm)
poly_norm_mul_fwd.register_autograd(_poly_norm_mul_grad, setup_context=_setup_poly_norm_mul)


# ---- public API --------------------------------------------------------------------------------------------

def poly_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6, backend: str = "auto") -> Tensor:
    """PolyNorm(x) = w0 norm(x^3) + w1 norm(x^2) + w2 norm(x) + b over the last dim (see module docstring)."""
    _check(x, None, weight, bias)
    if not _use_triton(x, backend):
        return poly_norm_reference(x, weight, bias, eps)
    return poly_norm_fwd(x, weight, bias, eps)[0]


def poly_norm_mul(x: Tensor, mul: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6,
                  backend: str = "auto") -> Tensor:
    """PolyNorm(x) * mul, fused (the PolyNorm FFN's activation times its up projection)."""
    _check(x, mul, weight, bias)
    if not _use_triton(x, backend):
        return poly_norm_mul_reference(x, mul, weight, bias, eps)
    return poly_norm_mul_fwd(x, mul, weight, bias, eps)[0]
