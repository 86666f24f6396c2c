"""The parallelize and pipelining functions of motif2's ModelSpec under TorchTitan 0.3 (0.3's keyword signatures).

The order and the plans are 0.2.2's (``motif_titan.infra.parallelize``): tensor + sequence parallel over whole GDA
groups, activation checkpointing, per-block compile, FSDP / HSDP, with the version-free plans of
``motif_titan.infra.parallel_plans`` and 0.3's own AC and compile. The plans are torch's imperative
``parallelize_module`` styles, so they run on 0.3's ``partial_dtensor`` SPMD backend (DTensor on the model-parallel
axes, as on 0.2.2); 0.3's default ``spmd_types`` and ``full_dtensor`` backends take only models whose TP layout is
declared on 0.3 ``Module.Config`` nodes, which motif2's torch modules have none of, so they are refused here by
name.

``pipeline_motif2`` is 0.3's ``pipeline_llm`` with motif2's stage split (see its docstring).
"""

import dataclasses
from types import SimpleNamespace

from torch import nn
from torchtitan.config import TORCH_DTYPE_MAP
from torchtitan.distributed.compile import apply_compile
from torchtitan.distributed.pipeline_parallel import (
    _generate_llm_fqn_per_model_part,
    _get_pipeline_metadata,
    pipeline_llm,
)

from motif_titan.infra.parallel_plans import apply_fsdp, apply_tp

SPMD_BACKEND = "partial_dtensor"


def check_parallelism(parallelism) -> None:
    """What 0.3's parallelism section may ask of motif2, refused by field name before anything is built."""
    if parallelism.spmd_backend != SPMD_BACKEND:
        raise ValueError(
            f"parallelism.spmd_backend = {parallelism.spmd_backend!r}: motif2's tensor-parallel plan is torch's "
            f"parallelize_module on whole GDA groups, which 0.3 runs on its {SPMD_BACKEND!r} backend only; "
            f"allowed: {SPMD_BACKEND!r}")
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


def pipeline_motif2(model: nn.Module, *, parallel_dims, parallelism, model_config, **kwargs):
    """0.3's ``pipeline_llm`` (stage split, per-stage ``parallelize_motif2``, schedule) for motif2.

    ``pipeline_llm`` counts the layers as ``len(model_config.layers)`` (0.3 ``Decoder`` configs list their blocks)
    and names the head ``lm_head``; motif2's config holds ``Motif2ModelArgs`` and its head is ``output``. So the
    default split is 0.3's own (``pipeline_parallel_layers_per_stage``, ``..._first_stage_less_layers``,
    ``..._last_stage_less_layers``, the schedule's stages per rank, with 0.3's errors) computed on the layer count
    and with motif2's head name, the same split 0.2.2 makes; ``parallelism.module_fqns_per_model_part`` names
    motif2's modules when set (checked with the job: ``motif_titan.infra.job_rules.check_pipeline_parallel``)."""
    stages_of = SimpleNamespace(layers=range(model_config.args.n_layers))  # what pipeline_llm reads of the config
    if parallelism.module_fqns_per_model_part is None:
        stages, n_layers, first_weight, last_weight = _get_pipeline_metadata(parallel_dims, parallelism, stages_of)
        split = [["output" if name == "lm_head" else name for name in part]
                 for part in _generate_llm_fqn_per_model_part(stages, n_layers, first_weight, last_weight)]
        parallelism = dataclasses.replace(parallelism, module_fqns_per_model_part=split)
    return pipeline_llm(model, parallel_dims=parallel_dims, parallelism=parallelism, model_config=stages_of,
                        **kwargs)
