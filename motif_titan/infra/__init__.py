"""Parallelism for Motif-2 models (TorchTitan's parallelize_fn)."""

from .parallelize import apply_fsdp, parallelize_motif2

__all__ = ["parallelize_motif2", "apply_fsdp"]
