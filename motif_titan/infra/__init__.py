"""Parallelism for Motif-2 models: TorchTitan's parallelize_fn (TP plan for GDA, AC, compile, FSDP/HSDP), the
job rules every layout is checked against first, FP8 settings. Pipelining is TorchTitan's own ``pipeline_llm``."""

from .parallelize import apply_fsdp, apply_tp, parallelize_motif2
from .tensor_parallel_polynorm import TensorParallelPolyNorm

__all__ = ["parallelize_motif2", "apply_tp", "apply_fsdp", "TensorParallelPolyNorm"]
