"""The fused Muon elementwise kernels (Triton; through TRITON_INTERPRET=1 on CPU) against float64 math and against
the torch composition they replace."""

import pytest
import torch

from motif_titan.kernels.muon_elementwise import muon_decay_update, muon_momentum

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _randn(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(DEVICE, dtype)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("buf_dtype", [torch.float32, torch.bfloat16])
def test_momentum_matches_float64_and_torch_ops(nesterov, buf_dtype):
    shape, mu = (37, 129), 0.95  # not a multiple of the block: the tail is masked
    buf0, grad = _randn(shape, 0, buf_dtype), _randn(shape, 1, buf_dtype)  # the buffer has the gradient's dtype
    buf = buf0.clone()
    update = muon_momentum(buf, grad, mu, nesterov)

    expected_buf = buf0.double() + (1 - mu) * (grad.double() - buf0.double())
    expected_update = grad.double() + mu * (expected_buf - grad.double()) if nesterov else expected_buf
    assert update.dtype == torch.bfloat16
    buf_tol = 1e-6 if buf_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(buf.double(), expected_buf, rtol=buf_tol, atol=buf_tol)
    torch.testing.assert_close(update.double(), expected_update, rtol=1e-2, atol=1e-2)

    # the torch ops it replaces: equal up to one unit in the last place of the stored dtype (FMA contraction and the
    # bf16 cast's ties can round either way)
    torch_buf = buf0.clone().lerp_(grad, 1 - mu)
    torch_update = (grad.lerp(buf, mu) if nesterov else buf).bfloat16()  # from the kernel's buf: one step at a time
    ulp = 2 ** -22 if buf_dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(buf, torch_buf, rtol=ulp, atol=ulp)
    torch.testing.assert_close(update, torch_update, rtol=2 ** -7, atol=2 ** -7)


@pytest.mark.parametrize("transposed", [False, True])
def test_decay_update_matches_float64_for_strided_updates(transposed):
    rows, cols, decay, alpha = 70, 45, 1 - 0.02 * 0.1, 0.37
    param0 = _randn((rows, cols), 2)
    source = _randn((cols, rows) if transposed else (rows, cols), 3, torch.bfloat16)
    update = source.T if transposed else source
    param = param0.clone()
    muon_decay_update(param, update, decay, alpha)
    expected = param0.double() * decay - alpha * update.double()
    torch.testing.assert_close(param.double(), expected, rtol=1e-6, atol=1e-6)


def test_decay_update_on_padded_rows_touches_only_the_view():
    storage = _randn((8, 16), 4)
    param = storage[:, :10]  # row stride 16: the padding columns must stay as they were
    before = storage.clone()
    muon_decay_update(param, torch.ones(8, 10, device=DEVICE, dtype=torch.bfloat16), 0.5, 1.0)
    torch.testing.assert_close(storage[:, :10], before[:, :10] * 0.5 - 1.0, rtol=1e-6, atol=1e-6)
    assert torch.equal(storage[:, 10:], before[:, 10:])


def test_kernels_reject_layouts_they_do_not_take():
    with pytest.raises(ValueError, match="contiguous buf and grad of one shape"):
        muon_momentum(torch.zeros(4, 4, device=DEVICE), torch.zeros(4, 4, device=DEVICE).T[:, :2], 0.9, True)
    with pytest.raises(ValueError, match="row-major 2-D param"):
        muon_decay_update(torch.zeros(4, 4, device=DEVICE).T, torch.zeros(4, 4, device=DEVICE), 1.0, 1.0)
