"""Pipeline parallelism for Motif-2: TorchTitan's own ``pipeline_llm`` (stage split by module names, schedules,
per-stage ``parallelize_fn``).

The Motif-2 model has the layout that splitting expects: ``tok_embeddings``, a ``layers`` ModuleDict keyed by
layer index, ``norm``, ``output``; its forward and ``init_weights`` skip the parts a stage lacks (None or removed
layers), and a middle stage's input is the hidden state. Every stage keeps the RoPE cache (a buffer, not split).
What the split cannot handle is refused here, before any stage is built, naming the TOML field. MuonClip's
max-logit recording skips each stage's shape-inference pass (``skip_max_logits_in_first_forward``).
"""

import torch
from torch import nn
from torchtitan.components.loss import LossFunction
from torchtitan.config import JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.protocols.train_spec import ParallelizeFunction

from motif_titan.model.args import Motif2ModelArgs
from motif_titan.model.model import GroupedDiffAttention


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
    if model_args.enable_weight_tying:
        raise NotImplementedError(
            f"parallelism.pipeline_parallel_degree = {parallel_dims.pp} with flavor '{job_config.model.flavor}', "
            "whose embedding and output head are one tied matrix: the first and last pipeline stages cannot share "
            "it. Use pipeline_parallel_degree = 1 or an untied flavor."
        )
    fqns = job_config.parallelism.module_fqns_per_model_part
    if fqns is not None:
        known = {"tok_embeddings", "norm", "output", *(f"layers.{i}" for i in range(model_args.n_layers))}
        unknown = sorted({name for part in fqns for name in part} - known)
        if unknown:
            raise ValueError(
                f"parallelism.module_fqns_per_model_part names {unknown}, which motif2 flavor "
                f"'{job_config.model.flavor}' does not have; allowed: tok_embeddings, layers.0 .. "
                f"layers.{model_args.n_layers - 1}, norm, output"
            )
    schedule, model_parts, has_first_stage, has_last_stage = pipeline_llm(
        model, parallel_dims, job_config, device, model_args, parallelize_fn, loss_fn)
    for part in model_parts:
        skip_max_logits_in_first_forward(part)
    return schedule, model_parts, has_first_stage, has_last_stage


def skip_max_logits_in_first_forward(part: nn.Module) -> None:
    """At its first step, torch's pipeline stage infers shapes by running the stage once on placeholder inputs
    (``torch.empty`` after the first stage; seen on gloo to hold NaN), before the real micro-batches. MuonClip's
    max-logit recording must not take those logits: this part's first forward in the process runs with the
    recording off. (On the first stage that pass sees a copy of the real first micro-batch, which its real
    forward records again, so nothing is lost.)"""
    attentions = [m for m in part.modules() if isinstance(m, GroupedDiffAttention)]
    saved: list[bool] = []

    def before(module, args, kwargs):
        saved[:] = [a.track_max_logits for a in attentions]
        for a in attentions:
            a.track_max_logits = False

    def after(module, args, kwargs, output):
        for a, tracking in zip(attentions, saved):
            a.track_max_logits = tracking
        pre.remove()
        post.remove()

    pre = part.register_forward_pre_hook(before, with_kwargs=True)
    post = part.register_forward_hook(after, with_kwargs=True)
