"""Parallelism for Motif-2 models: TorchTitan's parallelize_fn (TP plan for GDA, AC, compile, FSDP/HSDP) and
pipelining_fn."""

from .parallelize import apply_fsdp, apply_tp, parallelize_motif2
from .pipeline import pipeline_motif2
from .tensor_parallel_polynorm import TensorParallelPolyNorm

__all__ = ["parallelize_motif2", "pipeline_motif2", "apply_tp", "apply_fsdp", "TensorParallelPolyNorm"]
