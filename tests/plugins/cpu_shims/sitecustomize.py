"""On PYTHONPATH, makes TorchTitan's own entry point (``torchrun -m torchtitan.train ...``) run on a CPU-only machine:
the launcher's CPU shims (``motif_titan.train.apply_cpu_shims``), applied before TorchTitan picks a device. Tests
use it to run TorchTitan's unmodified entry point with motif_titan's config functions."""

import torch

if not torch.accelerator.is_available():
    from motif_titan.train import apply_cpu_shims

    apply_cpu_shims()
