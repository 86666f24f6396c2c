"""What a job's parallelism and converters may ask of a motif2 flavor: the rules across TOML sections, one
function per part, each raising naming the TOML field and what is allowed.

``check_motif2_job`` runs them all; ``motif_titan.validate.validate_job_config`` calls it after the flavor took
the job (``Motif2ModelArgs.update_from_config``), before TorchTitan builds anything. ``parallelize_motif2``,
TorchTitan's ``pipeline_llm`` and the converters trust what passed. Under TorchTitan 0.3 the rules that apply there
run on a view of its Trainer.Config with the same field names (``motif_titan.titan03.model.check_job``).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from torchtitan.tools import utils as tt_utils

from motif_titan.model.args import Motif2ModelArgs
from motif_titan.config_checks import ConfigError, expect, is_int

from .float8_rules import check_motif2_converters

if TYPE_CHECKING:  # 0.2.2's; under 0.3 the rules below read a view of its Trainer.Config with the same fields
    from torchtitan.config import JobConfig

DEGREES = ("data_parallel_replicate_degree", "data_parallel_shard_degree", "context_parallel_degree",
           "tensor_parallel_degree", "pipeline_parallel_degree")
FLEX_BLOCK_SIZE = 128  # flex attention's default BlockMask block (positions)


def check_parallel_degrees(parallelism, world_size: int | None) -> int:
    """Types and ranges of the parallel degrees, and their product against the world size; the data-parallel
    degree (replicate x shard, with shard -1 resolved)."""
    p = parallelism
    experts = tuple(n for n in ("expert_parallel_degree", "expert_tensor_parallel_degree") if hasattr(p, n))  # 0.3: ep
    for name in DEGREES + experts:
        special = name == "data_parallel_shard_degree"
        expect(f"parallelism.{name}", getattr(p, name), is_int,
               "-1 (the ranks left over) or an integer >= 1" if special else ">= 1",
               (lambda v: v == -1 or v >= 1) if special else (lambda v: v >= 1))
    rest = math.prod(getattr(p, name) for name in DEGREES if name != "data_parallel_shard_degree")
    shard = p.data_parallel_shard_degree
    if world_size is None:
        return p.data_parallel_replicate_degree * max(shard, 1)
    spelled = " x ".join(f"parallelism.{name} = {getattr(p, name)}" for name in DEGREES)
    if shard == -1:
        if world_size % rest:
            raise ConfigError(
                f"{spelled}: the degrees other than data_parallel_shard_degree multiply to {rest}, which does not "
                f"divide the world size {world_size} (processes launched), so data_parallel_shard_degree = -1 "
                f"cannot take the ranks left over; allowed: degrees whose product divides {world_size}")
        shard = world_size // rest
    elif rest * shard != world_size:
        raise ConfigError(
            f"{spelled}: the degrees multiply to {rest * shard}, but the world size (processes launched) is "
            f"{world_size}; allowed: degrees whose product is {world_size}, or data_parallel_shard_degree = -1 "
            f"(the ranks left over)")
    return p.data_parallel_replicate_degree * shard


def data_parallel_degree(job_config, world_size: int | None) -> int:
    """The data-parallel degree (replicate x shard) the job's degrees give on ``world_size`` ranks."""
    return check_parallel_degrees(job_config.parallelism, world_size)


def allowed_tp_degrees(model_args: Motif2ModelArgs) -> list[int]:
    """Tensor parallel degrees that keep whole GDA groups per rank (they divide the number of groups) and split
    the FFN hidden dim and the vocabulary evenly (``apply_tp``'s plan)."""
    return [d for d in range(1, model_args.n_noise_heads + 1) if model_args.n_noise_heads % d == 0
            and model_args.ffn_hidden_dim % d == 0 and model_args.vocab_size % d == 0]


def check_tensor_parallel(model_args: Motif2ModelArgs, job_config: JobConfig) -> None:
    """The degree keeps whole GDA groups (and FFN columns, vocabulary rows) per rank; the sequence splits evenly
    over the sequence-parallel norms."""
    tp, seq_len = job_config.parallelism.tensor_parallel_degree, job_config.training.seq_len
    if tp == 1:
        return
    allowed = allowed_tp_degrees(model_args)
    if tp not in allowed:
        raise ValueError(
            f"parallelism.tensor_parallel_degree = {tp}: tensor parallelism keeps whole GDA groups on each rank, "
            f"so the degree must divide n_noise_heads = {model_args.n_noise_heads} (the number of groups), "
            f"ffn_hidden_dim = {model_args.ffn_hidden_dim} and vocab_size = {model_args.vocab_size}; "
            f"allowed: {allowed}"
        )
    if seq_len % tp:
        raise ValueError(
            f"training.seq_len = {seq_len} must be a multiple of parallelism.tensor_parallel_degree = {tp} (the "
            f"sequence-parallel norms split the sequence evenly)"
        )


def check_context_parallel(model_args: Motif2ModelArgs, job_config: JobConfig) -> None:
    """The sequence splits into 2 * degree chunks (TorchTitan's head-tail load balancer; degree chunks without
    one), of whole 128-position blocks for flex attention, and each rank's share splits over the tensor parallel
    degree; SDPA's ring attention needs CUDA. (Which GDA value paths run under context parallelism is decided with
    the value path, in ``Motif2ModelArgs.update_from_config``.)"""
    par, seq_len = job_config.parallelism, job_config.training.seq_len
    cp, tp = par.context_parallel_degree, par.tensor_parallel_degree
    if cp == 1:
        return
    chunks = 2 * cp if par.context_parallel_load_balancer else cp
    # flex attention shards its block mask in whole 128-position blocks
    multiple = chunks * (FLEX_BLOCK_SIZE if model_args.attn_type == "flex" else 1)
    if seq_len % multiple or (seq_len // cp) % tp:
        raise ValueError(
            f"training.seq_len = {seq_len} must be a multiple of {multiple} (parallelism.context_parallel_degree "
            f"= {cp}, load balancer {par.context_parallel_load_balancer!r}, attn_type {model_args.attn_type!r}) "
            f"with seq_len / {cp} a multiple of parallelism.tensor_parallel_degree = {tp}"
        )
    device_type = tt_utils.device_type  # read now: motif_titan.train's CPU shims rebind it to "cpu"
    if model_args.attn_type == "sdpa" and device_type != "cuda":
        raise NotImplementedError(
            f"parallelism.context_parallel_degree = {cp} on {device_type}: ring attention for SDPA runs CUDA "
            f"attention kernels (flash / efficient / cuDNN) only; allowed on {device_type}: 1"
        )


def check_pipeline_parallel(model_args: Motif2ModelArgs, job_config: JobConfig) -> None:
    """Pipeline stages cannot split a tied embedding / head; a hand-made split names modules the flavor has."""
    par, flavor = job_config.parallelism, job_config.model.flavor
    if par.pipeline_parallel_degree == 1:
        return
    if model_args.enable_weight_tying:
        raise NotImplementedError(
            f"parallelism.pipeline_parallel_degree = {par.pipeline_parallel_degree} with flavor '{flavor}', whose "
            f"embedding and output head are one tied matrix: pipeline stages would split it between the first and "
            f"last stage. Use pipeline_parallel_degree = 1 or an untied flavor (enable_weight_tying=False)."
        )
    fqns = par.module_fqns_per_model_part
    if fqns is not None:
        known = {"tok_embeddings", "norm", "output", *(f"layers.{i}" for i in range(model_args.n_layers))}
        unknown = sorted({name for part in fqns for name in part} - known)
        if unknown:
            raise ValueError(
                f"parallelism.module_fqns_per_model_part names {unknown}, which motif2 flavor '{flavor}' does not "
                f"have; allowed: tok_embeddings, layers.0 .. layers.{model_args.n_layers - 1}, norm, output"
            )


def check_expert_parallel(job_config: JobConfig) -> None:
    degree = job_config.parallelism.expert_parallel_degree
    if degree != 1:
        raise NotImplementedError(f"parallelism.expert_parallel_degree = {degree}: motif2 has no experts; allowed: 1")


def check_data_parallel(job_config: JobConfig, world_size: int | None) -> None:
    """Replicas need sharding too (HSDP): motif2 has no DDP. With ``data_parallel_shard_degree = -1`` the shard
    degree is the world size's share, unknown without ``world_size``."""
    par = job_config.parallelism
    if par.data_parallel_replicate_degree == 1 or par.context_parallel_degree > 1:  # FSDP shards over cp too
        return
    if par.data_parallel_shard_degree == -1 and world_size is None:
        return
    shard = data_parallel_degree(job_config, world_size) // par.data_parallel_replicate_degree
    if shard == 1:
        raise NotImplementedError(
            "parallelism.data_parallel_replicate_degree > 1 without sharding (DDP) is not supported for motif2; "
            "use data_parallel_shard_degree (FSDP) or both (HSDP)"
        )


def check_converters(model_args: Motif2ModelArgs, job_config: JobConfig) -> None:
    """``motif_titan.infra.float8_rules.check_motif2_converters`` on the job's ``[model]`` and
    ``[quantize.linear.float8]``."""
    float8 = job_config.quantize.linear.float8
    check_motif2_converters(list(job_config.model.converters), list(float8.filter_fqns), float8.recipe_name,
                            model_args.enable_weight_tying, job_config.model.flavor)


def check_initial_load(model_args: Motif2ModelArgs, job_config: JobConfig) -> None:
    """The checkpoint a job loads first, when it describes itself (a step folder's ``model_args.json``, an HF
    folder's ``config.json``), has the flavor's shapes: else TorchTitan would stop mid-load on the first tensor
    ("Size mismatch between saved ... and current ..."). Each differing field is named (config.json's names for an
    HF folder); ``model.flavor = "from_checkpoint"`` takes the checkpoint's shapes."""
    from motif_titan.model import FROM_CHECKPOINT, initial_load_folder
    from motif_titan.model.hf_config import MODEL_ARGS_FILE, checkpoint_model_args, shape_differences

    folder, field = initial_load_folder(job_config)
    if folder is None or not job_config.checkpoint.enable or not os.path.isdir(folder):
        return
    saved = checkpoint_model_args(folder)
    if saved is None:
        return
    hf = not os.path.isfile(os.path.join(folder, MODEL_ARGS_FILE))
    differences = shape_differences(saved, model_args, names="hf" if hf else "native")
    if differences:
        raise ConfigError(f"model.flavor = {job_config.model.flavor!r} does not have the shapes of {field} = "
                          f"{folder!r} ({'config.json' if hf else MODEL_ARGS_FILE}): {'; '.join(differences)}; "
                          f"use the flavor it was trained with, or model.flavor = {FROM_CHECKPOINT!r}")


def check_motif2_job(model_args: Motif2ModelArgs, job_config: JobConfig, world_size: int | None = None) -> None:
    """Every rule above, for ``model_args`` that took the job (``update_from_config``)."""
    check_initial_load(model_args, job_config)
    check_tensor_parallel(model_args, job_config)
    check_context_parallel(model_args, job_config)
    check_pipeline_parallel(model_args, job_config)
    check_expert_parallel(job_config)
    check_converters(model_args, job_config)
    check_data_parallel(job_config, world_size)
