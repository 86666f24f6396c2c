"""The parallelize function of motif2's ModelSpec under TorchTitan 0.3 (0.3's keyword signature).

The order and the plans are 0.2.2's (``motif_titan.infra.parallelize``): tensor + sequence parallel over whole GDA
groups, activation checkpointing, per-block compile, FSDP / HSDP, with the version-free plans of
``motif_titan.infra.parallel_plans`` and 0.3's own AC and compile. The plans are torch's imperative
``parallelize_module`` styles, so they run on 0.3's ``partial_dtensor`` SPMD backend (DTensor on the model-parallel
axes, as on 0.2.2); 0.3's default ``spmd_types`` and ``full_dtensor`` backends take only models whose TP layout is
declared on 0.3 ``Module.Config`` nodes, which motif2's torch modules have none of, so they are refused here by
name.
"""

from torch import nn
from torchtitan.config import TORCH_DTYPE_MAP
from torchtitan.distributed.compile import apply_compile

from motif_titan.infra.parallel_plans import apply_fsdp, apply_tp

SPMD_BACKEND = "partial_dtensor"


def check_parallelism(parallelism) -> None:
    """What 0.3's parallelism section may ask of motif2, refused by field name before anything is built."""
    if parallelism.spmd_backend != SPMD_BACKEND:
        raise ValueError(
            f"parallelism.spmd_backend = {parallelism.spmd_backend!r}: motif2's tensor-parallel plan is torch's "
            f"parallelize_module on whole GDA groups, which 0.3 runs on its {SPMD_BACKEND!r} backend only; "
            f"allowed: {SPMD_BACKEND!r}")
    if parallelism.pipeline_parallel_degree != 1:
        raise NotImplementedError(
            f"parallelism.pipeline_parallel_degree = {parallelism.pipeline_parallel_degree} on TorchTitan 0.3: "
            "motif2's pipeline split is built and tested on TorchTitan 0.2.2 only; allowed on 0.3: 1")
    if parallelism.context_parallel_degree != 1:
        raise NotImplementedError(
            f"parallelism.context_parallel_degree = {parallelism.context_parallel_degree} on TorchTitan 0.3: "
            "context parallelism for GDA is built and tested on TorchTitan 0.2.2 only; allowed on 0.3: 1")


def parallelize_motif2(model: nn.Module, *, parallel_dims, training, parallelism, compile_config, ac_config,
                       dump_folder: str) -> nn.Module:
    check_parallelism(parallelism)
    if parallel_dims.tp_enabled:
        # 0.3's cross entropy takes a vocab-sharded DTensor output as loss parallel: always on.
        apply_tp(model, parallel_dims.get_mesh("tp"), loss_parallel=True)
    if ac_config is not None:
        ac_config.build(dump_folder=dump_folder).apply(model)
    if compile_config.enable and "model" in compile_config.components:
        apply_compile(model, compile_config=compile_config, parallel_dims=parallel_dims)
    if parallel_dims.fsdp_enabled:
        names = ["dp_replicate", "fsdp"] if parallel_dims.dp_replicate_enabled else ["fsdp"]
        apply_fsdp(
            model,
            parallel_dims.get_mesh(names),
            param_dtype=TORCH_DTYPE_MAP[training.mixed_precision_param],
            reduce_dtype=TORCH_DTYPE_MAP[training.mixed_precision_reduce],
            pp_enabled=parallel_dims.pp_enabled,
            cpu_offload=training.enable_cpu_offload,
            reshard_after_forward_policy=parallelism.fsdp_reshard_after_forward,
        )
    return model
