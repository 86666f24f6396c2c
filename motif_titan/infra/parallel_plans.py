"""The Motif-2 parallel plans in torch alone (no TorchTitan import), shared by every TorchTitan version's
parallelize function: tensor + sequence parallel over whole GDA groups, and FSDP2 / HSDP units.

Tensor parallel plan (``apply_tp``): GDA's head layout keeps every group in a contiguous block of rows: group g is
q heads (R+1)g .. (R+1)g+R (R signal heads, then the noise head), kv heads 2g (K1/V1) and 2g+1 (K2/V2), and
the wo input columns of its R signal heads. So plain contiguous column-parallel wq / wk / wv and row-parallel wo
hold whole groups per rank when the TP degree divides the number of groups: attention runs locally, no weight
is permuted. The small per-layer parameters (lambda vectors, subln, PolyNorm weight and bias) are replicated;
PolyNorm's row moments are all-reduced over tp (``TensorParallelPolyNorm``). Norms are sequence parallel and the
output head is column parallel with a vocab-sharded output for TorchTitan's loss parallel, as in llama3.
"""

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from motif_titan.model.model import GroupedDiffAttention

from .tensor_parallel_polynorm import TensorParallelPolyNorm

logger = logging.getLogger(__name__)


def disable_fsdp_gradient_division(model: nn.Module) -> None:
    """Gradients are summed over the data-parallel ranks, not averaged: TorchTitan's loss is already divided by
    the global token count."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)


def apply_fsdp(
    model: nn.Module,
    dp_mesh: DeviceMesh,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    pp_enabled: bool = False,
    cpu_offload: bool = False,
    reshard_after_forward_policy: str = "default",
) -> None:
    """FSDP2 per transformer block, then the edges. Tied embeddings share one parameter, so embedding, final
    norm and head stay together in the root unit; untied, they get their own units as in TorchTitan's llama3.
    A pipeline stage lacks some of them (None). With PP, "default" keeps parameters unsharded after forward
    (no all-gather per micro-batch), as TorchTitan does."""
    fsdp_config: dict = {"mesh": dp_mesh, "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype,
                                                                            reduce_dtype=reduce_dtype)}
    if cpu_offload:
        fsdp_config["offload_policy"] = CPUOffloadPolicy()
    reshard_after_forward = {"always": True, "never": False, "default": not pp_enabled}[reshard_after_forward_policy]

    tied = model.model_args.enable_weight_tying
    if not tied and model.tok_embeddings is not None:
        fully_shard(model.tok_embeddings, **fsdp_config, reshard_after_forward=reshard_after_forward)
    for block in model.layers.values():
        fully_shard(block, **fsdp_config, reshard_after_forward=reshard_after_forward)
    if not tied and model.norm is not None and model.output is not None:
        # The last units are needed again right away in backward: keep them unsharded unless told otherwise.
        fully_shard([model.norm, model.output], **fsdp_config,
                    reshard_after_forward=reshard_after_forward_policy == "always")
    fully_shard(model, **fsdp_config)
    disable_fsdp_gradient_division(model)


def _replicate_parameters(module: nn.Module, mesh: DeviceMesh) -> None:
    """Turn ``module``'s own parameters into DTensors replicated over ``mesh`` (same names, same values)."""
    for name, param in list(module.named_parameters(recurse=False)):
        replicated = distribute_tensor(param.data, mesh, [Replicate()])
        module.register_parameter(name, nn.Parameter(replicated, requires_grad=param.requires_grad))


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh, loss_parallel: bool) -> None:
    """Tensor + sequence parallelism over ``tp_mesh`` (see the module docstring for the GDA plan)."""
    model_args = model.model_args
    tp = tp_mesh.size()

    edges = {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "output": ColwiseParallel(
            input_layouts=Shard(1),
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        ),
    }
    parallelize_module(model, tp_mesh, {name: style for name, style in edges.items()
                                        if getattr(model, name) is not None})
    if model_args.enable_weight_tying:
        # Both sides were distributed as Shard(0) over the vocabulary, into two Parameters: share one again.
        model.output.weight = model.tok_embeddings.weight

    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(
                input_layouts=(Shard(1), None, None, None),
                desired_input_layouts=(Replicate(), None, None, None),
            ),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(
                input_layouts=(Shard(1),),
                desired_input_layouts=(Replicate(),),
            ),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
            "feed_forward.w3": ColwiseParallel(),
        })
        attention: GroupedDiffAttention = block.attention
        _replicate_parameters(attention, tp_mesh)  # lambda_q1, lambda_k1, lambda_q2, lambda_k2
        _replicate_parameters(attention.subln, tp_mesh)
        ffn = block.feed_forward
        ffn.poly_norm = TensorParallelPolyNorm(ffn.poly_norm, tp_mesh)
        _replicate_parameters(ffn.poly_norm, tp_mesh)
    logger.info("Applied Tensor Parallelism to the model (%d GDA groups per rank)", model_args.n_noise_heads // tp)
