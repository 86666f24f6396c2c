"""Apply parallelism to a Motif-2 model: activation checkpointing, per-block torch.compile, FSDP/HSDP.

Mirrors TorchTitan's ``parallelize_llama`` order (TP -> CP -> AC -> compile -> FSDP) and reuses its helpers.
Tensor, context and pipeline parallelism are rejected earlier, in ``Motif2ModelArgs.update_from_config``;
the checks here only guard direct callers that skip that step.
"""

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torchtitan.config import TORCH_DTYPE_MAP, JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.activation_checkpoint import apply_ac
from torchtitan.models.llama3.infra.parallelize import apply_compile, disable_fsdp_gradient_division
from torchtitan.tools.logging import logger

# Ops whose outputs selective AC keeps instead of recomputing (TorchTitan's llama3 list, which covers the
# matmuls and every attention backend GDA calls).
_OP_SAC_SAVE_LIST = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.aten._scaled_dot_product_attention_math.default,
    torch.ops.aten._scaled_dot_product_fused_attention_overrideable.default,
    torch.ops._c10d_functional.reduce_scatter_tensor.default,
    torch.ops.aten.max.default,
    torch._higher_order_ops.flex_attention,
}


def parallelize_motif2(model: nn.Module, parallel_dims: ParallelDims, job_config: JobConfig) -> nn.Module:
    """TorchTitan's ``parallelize_fn`` for motif2: AC, compile and FSDP/HSDP (or DDP) as the config asks."""
    for name, enabled in (("tensor", parallel_dims.tp_enabled), ("context", parallel_dims.cp_enabled),
                          ("pipeline", parallel_dims.pp_enabled)):
        if enabled:
            raise NotImplementedError(f"motif2 has no {name} parallel plan yet")

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
            cpu_offload=job_config.training.enable_cpu_offload,
            reshard_after_forward_policy=job_config.parallelism.fsdp_reshard_after_forward,
        )
        logger.info("Applied %s to the model", "HSDP" if parallel_dims.dp_replicate_enabled else "FSDP")
    elif parallel_dims.dp_replicate_enabled:
        raise NotImplementedError(
            "parallelism.data_parallel_replicate_degree > 1 without sharding (DDP) is not supported for motif2; "
            "use data_parallel_shard_degree (FSDP) or both (HSDP)"
        )
    return model


def apply_fsdp(
    model: nn.Module,
    dp_mesh: DeviceMesh,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    cpu_offload: bool = False,
    reshard_after_forward_policy: str = "default",
) -> None:
    """FSDP2 per transformer block, then the edges. Tied embeddings share one parameter, so embedding, final
    norm and head stay together in the root unit; untied, they get their own units as in TorchTitan's llama3."""
    fsdp_config: dict = {"mesh": dp_mesh, "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype,
                                                                            reduce_dtype=reduce_dtype)}
    if cpu_offload:
        fsdp_config["offload_policy"] = CPUOffloadPolicy()
    policies = {"always": True, "never": False, "default": True}
    if reshard_after_forward_policy not in policies:
        raise ValueError(
            f"parallelism.fsdp_reshard_after_forward = {reshard_after_forward_policy!r}; allowed: {list(policies)}"
        )
    reshard_after_forward = policies[reshard_after_forward_policy]

    tied = model.model_args.enable_weight_tying
    if not tied:
        fully_shard(model.tok_embeddings, **fsdp_config, reshard_after_forward=reshard_after_forward)
    for block in model.layers.values():
        fully_shard(block, **fsdp_config, reshard_after_forward=reshard_after_forward)
    if not tied:
        # The last units are needed again right away in backward: keep them unsharded unless told otherwise.
        fully_shard([model.norm, model.output], **fsdp_config,
                    reshard_after_forward=reshard_after_forward_policy == "always")
    fully_shard(model, **fsdp_config)
    disable_fsdp_gradient_division(model)
