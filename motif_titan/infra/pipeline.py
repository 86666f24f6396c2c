"""Pipeline parallelism for Motif-2: TorchTitan's own ``pipeline_llm`` (stage split by module names, schedules,
per-stage ``parallelize_fn``).

The Motif-2 model has the layout that splitting expects: ``tok_embeddings``, a ``layers`` ModuleDict keyed by
layer index, ``norm``, ``output``; its forward and ``init_weights`` skip the parts a stage lacks (None or removed
layers), and a middle stage's input is the hidden state. Every stage keeps the RoPE cache (a buffer, not split).
What the split cannot handle (a tied embedding and head, module names the flavor lacks) is refused before anything
is built (``motif_titan.infra.job_rules.check_pipeline_parallel``), naming the TOML field.
"""

import torch
from torch import nn
from torchtitan.components.loss import LossFunction
from torchtitan.config import JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.protocols.train_spec import ParallelizeFunction

from motif_titan.model.args import Motif2ModelArgs


def pipeline_motif2(
    model: nn.Module,
    parallel_dims: ParallelDims,
    job_config: JobConfig,
    device: torch.device,
    model_args: Motif2ModelArgs,
    parallelize_fn: ParallelizeFunction,
    loss_fn: LossFunction,
):
    """TorchTitan's ``pipelining_fn`` for motif2: returns (schedule, model parts, has first stage, has last)."""
    return pipeline_llm(model, parallel_dims, job_config, device, model_args, parallelize_fn, loss_fn)
