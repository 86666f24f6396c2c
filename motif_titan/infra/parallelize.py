"""Apply parallelism to a Motif-2 model (or one pipeline stage of it): tensor + sequence parallel, activation
checkpointing, per-block torch.compile, FSDP/HSDP.

Mirrors TorchTitan's ``parallelize_llama`` order (TP -> CP -> AC -> compile -> FSDP) and reuses its helpers.
Unsupported layouts (TP degrees that split a GDA group, sequences that do not split evenly, ...) are refused before
anything is built, naming the TOML field (``motif_titan.infra.job_rules``); the functions here trust the job.

Tensor parallel plan (``apply_tp``): GDA's head layout keeps every group in a contiguous block of rows: group g is
q heads (R+1)g .. (R+1)g+R (R signal heads, then the noise head), kv heads 2g (K1/V1) and 2g+1 (K2/V2), and
the wo input columns of its R signal heads. So plain contiguous column-parallel wq / wk / wv and row-parallel wo
hold whole groups per rank when the TP degree divides the number of groups: attention runs locally, no weight
is permuted. The small per-layer parameters (lambda vectors, subln, PolyNorm weight and bias) are replicated;
PolyNorm's row moments are all-reduced over tp (``TensorParallelPolyNorm``). Norms are sequence parallel and the
output head is column parallel with a vocab-sharded output for TorchTitan's loss parallel, as in llama3.
"""

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torchtitan.config import TORCH_DTYPE_MAP, JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.activation_checkpoint import apply_ac
from torchtitan.distributed.context_parallel import apply_cp_to_attention_module
from torchtitan.distributed.tensor_parallel import maybe_enable_async_tp
from torchtitan.models.llama3.infra.parallelize import _op_sac_save_list as _LLAMA3_OP_SAC_SAVE_LIST
from torchtitan.models.llama3.infra.parallelize import apply_compile, disable_fsdp_gradient_division
from torchtitan.tools.logging import logger

from motif_titan.model.model import GroupedDiffAttention

from .tensor_parallel_polynorm import TensorParallelPolyNorm

# Ops whose outputs selective AC keeps instead of recomputing: TorchTitan's llama3 list, which covers the matmuls
# and every attention backend GDA calls (SDPA kernels, flex attention), so GDA adds nothing to it.
_OP_SAC_SAVE_LIST = set(_LLAMA3_OP_SAC_SAVE_LIST)


def parallelize_motif2(model: nn.Module, parallel_dims: ParallelDims, job_config: JobConfig) -> nn.Module:
    """TorchTitan's ``parallelize_fn`` for motif2: TP, AC, compile and FSDP/HSDP as the config asks. Called on
    the whole model, or on each pipeline stage (TorchTitan's ``pipeline_llm``), whose missing parts are None."""
    if parallel_dims.tp_enabled:
        tp_mesh = parallel_dims.get_mesh("tp")
        apply_tp(model, tp_mesh, loss_parallel=not job_config.parallelism.disable_loss_parallel)
        maybe_enable_async_tp(job_config, tp_mesh)
    if parallel_dims.cp_enabled:
        # Each GDA layer calls its inner attention module four times (signal and noise maps, two V halves); the
        # plan wraps the module, so every call runs as ring attention (SDPA) or against all-gathered K/V (flex).
        apply_cp(model, parallel_dims.get_mesh("cp"))

    model_compile_enabled = job_config.compile.enable and "model" in job_config.compile.components
    if job_config.activation_checkpoint.mode != "none":
        apply_ac(
            model,
            job_config.activation_checkpoint,
            model_compile_enabled=model_compile_enabled,
            op_sac_save_list=_OP_SAC_SAVE_LIST,
            base_folder=job_config.job.dump_folder,
        )
    if model_compile_enabled:
        apply_compile(model, job_config.compile)

    if parallel_dims.fsdp_enabled:
        names = ["dp_replicate", "fsdp"] if parallel_dims.dp_replicate_enabled else ["fsdp"]
        apply_fsdp(
            model,
            parallel_dims.get_mesh(names),
            param_dtype=TORCH_DTYPE_MAP[job_config.training.mixed_precision_param],
            reduce_dtype=TORCH_DTYPE_MAP[job_config.training.mixed_precision_reduce],
            pp_enabled=parallel_dims.pp_enabled,
            cpu_offload=job_config.training.enable_cpu_offload,
            reshard_after_forward_policy=job_config.parallelism.fsdp_reshard_after_forward,
        )
        logger.info("Applied %s to the model", "HSDP" if parallel_dims.dp_replicate_enabled else "FSDP")
    return model


def apply_cp(model: nn.Module, cp_mesh: DeviceMesh) -> None:
    """Context parallelism: TorchTitan's plan on every layer's ``inner_attention`` (the module each of GDA's four
    attention calls per layer goes through)."""
    attentions = [block.attention for block in model.layers.values() if block is not None]
    apply_cp_to_attention_module([a.inner_attention for a in attentions], cp_mesh, model.model_args.attn_type)


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
