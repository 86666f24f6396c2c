"""Apply parallelism to a Motif-2 model (or one pipeline stage of it) under TorchTitan 0.2.2: tensor + sequence
parallel, context parallel, activation checkpointing, per-block torch.compile, FSDP/HSDP.

Mirrors TorchTitan's ``parallelize_llama`` order (TP -> CP -> AC -> compile -> FSDP) and reuses its helpers; the
plans themselves are version-free (``motif_titan.infra.parallel_plans``). Unsupported layouts (TP degrees that split
a GDA group, sequences that do not split evenly, ...) are refused before anything is built, naming the TOML field
(``motif_titan.infra.job_rules``); the functions here trust the job.
"""

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torchtitan.config import TORCH_DTYPE_MAP, JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.activation_checkpoint import apply_ac
from torchtitan.distributed.context_parallel import apply_cp_to_attention_module
from torchtitan.distributed.tensor_parallel import maybe_enable_async_tp
from torchtitan.models.llama3.infra.parallelize import _op_sac_save_list as _LLAMA3_OP_SAC_SAVE_LIST
from torchtitan.models.llama3.infra.parallelize import apply_compile
from torchtitan.tools.logging import logger

from .parallel_plans import apply_fsdp, apply_tp

__all__ = ["apply_cp", "apply_fsdp", "apply_tp", "parallelize_motif2"]

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
