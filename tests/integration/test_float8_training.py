"""A CPU training run with FP8 linears (torchao's emulation mode) through the trainer; which linears the
converters swap is checked in tests/unit/test_float8.py."""

from helpers.goldens import FP8_EMULATED_LOSSES
from helpers.launch import mean_loss, run_training


def test_fp8_emulated_training_run_on_cpu(tmp_path):
    """TorchTitan's converter on the debug model (every linear is a multiple of 16, so all but the head become
    Float8Linear, tensor-wise scaled, emulated in fp32 on the CPU): the run trains."""
    losses, log = run_training(tmp_path / "fp8", 1, "--training.steps", "6", "--training.local_batch_size", "2",
                               "--model.converters", "quantize.linear.float8", "--quantize.linear.float8.emulate",
                               "--quantize.linear.float8.filter_fqns", "output", return_log=True)
    assert "Swapped to Float8Linear layers" in log
    assert mean_loss(losses, range(5, 7)) < float(losses[1]) - 0.3, losses
    assert losses == FP8_EMULATED_LOSSES  # the same under TorchTitan 0.2.2 and 0.3


