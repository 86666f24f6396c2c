"""TorchTitan 0.3: the runs the suite makes under 0.2.2, made under 0.3 from the same TOML files and launchers, with
the losses 0.2.2 logs (``helpers.goldens``, pinned from 0.2.2 runs and asserted by the 0.2.2 suite too).

The test command runs this folder, and the composition matrix (tests/integration/test_composition_matrix.py), in a
second venv with ``torchtitan==0.3.0`` (``scripts/test_titan03.sh``); under 0.2.2 this folder is skipped. The two
trainers reduce in the same order here (same model code, same loss normalization by the global count of valid
labels, FSDP gradient sums), so the losses are compared digit for digit where one process trains and with the
composition matrix's tolerances across layouts.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from motif_titan.titan_version import TORCHTITAN_03

from helpers.goldens import DEBUG_TOML_FIRST_STEPS, README_MAIN_JOB_LOSSES
from helpers.launch import DEBUG_TOML, REPO, STEP_LOSS, failure_report

pytestmark = pytest.mark.skipif(not TORCHTITAN_03, reason="TorchTitan 0.3 runs (the 0.3 venv of the test command)")

PLUGINS = REPO / "tests" / "plugins"
# the llama3 run's batch ramp: 1024 -> 2048 tokens over steps 2..4 in micro-batches of 1024 (4 rows x 128 on each
# of 2 ranks); step 3's 1536 rounds half up to 2 micro-batches
LLAMA3_RAMP_TOKENS = {1: 1024, 2: 1024, 3: 2048, 4: 2048, 5: 2048, 6: 2048}
CPU_ENTRY = PLUGINS / "cpu_shims"  # sitecustomize: the launcher's CPU shims for TorchTitan's own entry point


def _run(cmd: list[str], cwd: Path, extra_path: tuple[Path, ...] = (), threads: int = 1) -> str:
    """Run a launch; its log without colors."""
    import os
    import re

    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([*map(str, extra_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, failure_report(proc)
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def test_the_readme_main_job_logs_the_losses_of_0_2_2(tmp_path):
    """The README's main job, as its command runs it (``python -m motif_titan.train --job.config_file
    train_configs/motif2_debug.toml``: 100 steps, nothing overridden), logs 0.2.2's losses at every logged step."""
    log = _run([sys.executable, "-m", "motif_titan.train", "--job.config_file", str(DEBUG_TOML)], tmp_path, threads=2)
    assert dict(STEP_LOSS.findall(log)) == README_MAIN_JOB_LOSSES
    assert "Done: 100 steps in " in log and "loss 8.07713 (step 1) -> 4.15432 (step 100)" in log
    noise = [line for line in log.splitlines() if any(w in line for w in ("WARNING", "Warning", "Failed to load"))]
    assert not noise, noise  # as clean as under 0.2.2 (tests/integration/test_first_run.py)
    dump = tmp_path / "outputs" / "motif2_debug"
    assert all((dump / name).exists() for name in ("tb", "train.log", "job_config.json", "model_args.json"))


def test_torchtitans_own_entry_point_trains_motif2_from_its_config_function(tmp_path):
    """``torchrun -m torchtitan.train --module motif_titan --config motif2_debug`` (TorchTitan 0.3's own entry point
    and config manager; on this CPU-only machine with the launcher's CPU shims in a sitecustomize) trains the debug
    TOML's run: the first steps' losses are 0.2.2's."""
    log = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
                "torchtitan.train", "--module", "motif_titan", "--config", "motif2_debug", "--training.steps", "3",
                "--metrics.log_freq", "1", "--metrics.disable_color_printing", "--dump_folder", str(tmp_path / "run")],
               tmp_path, extra_path=(CPU_ENTRY,))
    assert dict(STEP_LOSS.findall(log)) == DEBUG_TOML_FIRST_STEPS


def test_the_curriculum_example_on_two_ranks_logs_0_2_2s_losses_and_resumes_exactly(tmp_path):
    """The curriculum example (train_configs/motif2_debug_curriculum.toml) on 2 ranks with both ramps, stopped and
    resumed mid-ramp: the 0.2.2 test itself (tests/integration/test_curriculum_training.py), whose reference run must
    log ``CURRICULUM_TWO_RANK_LOSSES`` under either version. The resumed run's last step folder describes its
    model (``model_args.json``) and exports to an HF folder as a 0.2.2 one does."""
    import json

    from integration.test_curriculum_training import test_curriculum_run_on_two_ranks_resumes_exactly_mid_ramp

    test_curriculum_run_on_two_ranks_resumes_exactly_mid_ramp(tmp_path)
    step = tmp_path / "resumed" / "checkpoint" / "step-8"
    assert json.loads((step / "model_args.json").read_text())["dim"] == 256
    _run([sys.executable, "-m", "motif_titan.export", "--checkpoint", str(step), "--out", str(tmp_path / "hf"),
          "--hf-assets", "embedded"], tmp_path)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_noise_heads"]) == (256, 4, 2)


def test_torchtitan_03s_llama3_trains_with_parallel_muon_and_the_curriculum_dataloader(tmp_path):
    """Another 0.3 project's config (tests/plugins/llama3_with_motif_03.py: 0.3's llama3 debug run with
    ``MuonOptimizers`` and ``CurriculumDataLoader`` set in its Trainer.Config), through TorchTitan's own entry point
    on FSDP 2: ParallelMuon logs the losses of DistributedMuon (the other exchange of the same update; both are
    checked against torch.optim.Muon on FSDP placements by tests/integration/test_muon_ranks.py), the loss falls,
    and the batch ramp's step sizes are the curriculum's."""
    import re

    def launch(name: str, optimizer: str) -> str:
        return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                     "-m", "torchtitan.train", "--module", "llama3_with_motif_03", "--config",
                     "llama3_muon_curriculum", "--dump_folder", str(tmp_path / name), "--optimizer.name", optimizer,
                     "--parallelism.data_parallel_shard_degree", "2"], tmp_path, extra_path=(CPU_ENTRY, PLUGINS))

    parallel = launch("parallel", "ParallelMuon")
    distributed = launch("distributed", "DistributedMuon")
    losses = {int(s): float(v) for s, v in STEP_LOSS.findall(parallel)}
    reference = {int(s): float(v) for s, v in STEP_LOSS.findall(distributed)}
    assert sorted(losses) == sorted(reference) == list(range(1, 7))
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, abs=1e-3 if step <= 2 else 5e-3), (step, losses, reference)
    assert losses[6] < losses[1] - 0.5, losses
    tokens = {int(s): int(float(t)) for s, t in re.findall(r"step (\d+): .*curriculum/step_tokens ([0-9.e+]+)",
                                                          parallel)}
    assert tokens == LLAMA3_RAMP_TOKENS, tokens


def test_a_toml_key_0_3_has_no_place_for_is_refused_naming_the_file_and_key(tmp_path):
    import re

    from motif_titan.titan03.toml_config import TomlConfigError, trainer_config_from_toml

    bad = tmp_path / "bad.toml"
    bad.write_text(DEBUG_TOML.read_text().replace("[training]\n", "[training]\nwarmup = 3\n", 1))
    with pytest.raises(TomlConfigError, match=rf"^{bad}: \[training\] warmup \(training.warmup\): unknown key; "
                                              r"\[training\] takes \['dataloader', 'dataset', 'dataset_path', 'disable_cuda_graphs', "):
        trainer_config_from_toml(bad)
    fp8 = tmp_path / "fp8.toml"
    fp8.write_text(DEBUG_TOML.read_text().replace('name = "motif2"', 'name = "motif2"\nconverters = ["x"]', 1))
    with pytest.raises(NotImplementedError, match=re.escape(
            "model.converters = ['x']: motif2 does not support ['x']; allowed: any of ['quantize.linear.float8', "
            "'quantize.linear.float8_auto_filter'] (FP8 linears), or []")):
        trainer_config_from_toml(fp8)


def test_0_2_2s_job_rules_refuse_a_0_3_job_when_the_model_takes_it():
    """The rules across sections (motif_titan.infra.job_rules) run on 0.3's Trainer.Config when motif2's model config
    takes the job (``update_from_config``, before the model is built), with 0.2.2's messages."""
    import re

    from motif_titan.titan03.toml_config import trainer_config_from_toml

    def take(overrides):
        config = trainer_config_from_toml(DEBUG_TOML, overrides)
        config.model_spec.model.update_from_config(config=config)

    with pytest.raises(NotImplementedError, match=re.escape(
            "parallelism.pipeline_parallel_degree = 2 with flavor 'debugmodel_diffattn', whose embedding and output "
            "head are one tied matrix")):
        take({"model.flavor": "debugmodel_diffattn", "parallelism.pipeline_parallel_degree": 2,
              "parallelism.pipeline_parallel_microbatch_size": 2})
    with pytest.raises(ValueError, match=re.escape(
            "parallelism.tensor_parallel_degree = 3: tensor parallelism keeps whole GDA groups on each rank, so the "
            "degree must divide n_noise_heads = 2")):
        take({"parallelism.tensor_parallel_degree": 3})
    with pytest.raises(ValueError, match=re.escape(
            "parallelism.module_fqns_per_model_part names ['layers.9', 'lm_head'], which motif2 flavor 'debugmodel' "
            "does not have")):
        take({"parallelism.pipeline_parallel_degree": 2, "parallelism.pipeline_parallel_microbatch_size": 2,
              "parallelism.module_fqns_per_model_part": [["tok_embeddings", "layers.9"], ["norm", "lm_head"]]})
    # the curriculum's rule across sections, checked with the config (0.2.2's launch test of it:
    # tests/integration/test_composition_matrix.py)
    with pytest.raises(ValueError, match=re.escape(
            "curriculum.seq_len_ramp_start = 64 with parallelism.pipeline_parallel_degree = 2: pipeline stages "
            "infer their activation shapes once")):
        trainer_config_from_toml(REPO / "tests" / "configs" / "composition_curriculum.toml", {
            "parallelism.pipeline_parallel_degree": 2, "parallelism.pipeline_parallel_microbatch_size": 4,
            "curriculum.seq_len_ramp_start": 64, "curriculum.seq_len_ramp_steps": [1, 2]})



def test_fp8_emulated_training_run_through_0_3s_config_converter(tmp_path):
    """The 0.2.2 FP8 run (tests/integration/test_float8_training.py: ``[model] converters`` and
    ``[quantize.linear.float8]`` on the command line, torchao's emulation on the CPU) under 0.3, where the converter
    is ``Motif2Float8`` on motif2's config; its losses are 0.2.2's."""
    from integration.test_float8_training import test_fp8_emulated_training_run_on_cpu

    test_fp8_emulated_training_run_on_cpu(tmp_path)


def test_every_stage_config_function_builds_its_model_with_the_0_2_2_fp8_layout():
    """Each config function (one per TOML of train_configs/) gives a Trainer.Config whose model builds on the meta
    device; the stage configs' FP8 converter (auto filter, row-wise recipe, head in BF16) swaps what 0.2.2's does
    (tests/unit/test_float8.py): in the 12.7B, wq, wo, w1, w2 and w3 of every layer, keeping wk, wv (2048 x 4096,
    below torchao's row-wise thresholds) and the head in high precision; in the 2.6B (width 2048) only w1 and w3
    (8192 x 2048), its other linears having 2048 outputs."""
    import dataclasses

    import torch
    from torchao.float8.float8_linear import Float8Linear

    import motif_titan.config_registry as registry

    for name in registry.CONFIG_FILES:
        config = getattr(registry, name.replace(".", "_"))()
        model_config = config.model_spec.model
        if model_config.float8 is not None:
            model_config.float8 = dataclasses.replace(model_config.float8, emulate=True)  # no FP8 GPU here
        model_config.update_from_config(config=config)
        with torch.device("meta"):
            model = model_config.build()
        converted = sorted({fqn.rsplit(".", 1)[-1] for fqn, m in model.named_modules() if isinstance(m, Float8Linear)})
        count = sum(isinstance(m, Float8Linear) for m in model.modules())
        if name.startswith("motif2_debug"):
            assert model_config.float8 is None and count == 0, name
        else:
            expected = ["w1", "w3"] if name == "motif2_2.6B_pretrain" else ["w1", "w2", "w3", "wo", "wq"]
            assert converted == expected, (name, converted)
            assert count == len(expected) * model_config.args.n_layers, (name, count)


def test_from_checkpoint_takes_the_shapes_of_the_step_folder_it_loads(tmp_path):
    """``flavor = "from_checkpoint"`` under 0.3: the model config takes the shapes of
    ``checkpoint.initial_load_path``'s ``model_args.json`` when the trainer hands it the job."""
    from types import SimpleNamespace

    from torchtitan.config import CommConfig, ParallelismConfig

    from motif_titan.model import Motif2ModelArgs
    from motif_titan.model.hf_config import write_model_args
    from motif_titan.titan03 import model_registry

    shapes = Motif2ModelArgs(dim=128, n_layers=3, n_heads=10, n_kv_heads=4, n_noise_heads=2, head_dim=16,
                             ffn_hidden_dim=256, vocab_size=2048, max_seq_len=512, rope_theta=10_000.0)
    write_model_args(tmp_path, shapes)
    model_config = model_registry("from_checkpoint").model
    job = SimpleNamespace(training=SimpleNamespace(seq_len=256), parallelism=ParallelismConfig(), comm=CommConfig(),
                          checkpoint=SimpleNamespace(enable=True, initial_load_path=str(tmp_path),
                                                     initial_load_in_hf=False),
                          hf_assets_path="embedded")
    model_config.update_from_config(config=job)
    args = model_config.args
    assert (args.dim, args.n_layers, args.head_dim, args.max_seq_len, args.rope_theta) == (128, 3, 16, 512, 10_000.0)
    job.training.seq_len = 1024
    with pytest.raises(ValueError, match=r"training.seq_len = 1024 exceeds the max_seq_len 512 of motif2 flavor "
                                         r"'from_checkpoint'"):
        model_registry("from_checkpoint").model.update_from_config(config=job)


def test_the_nonfinite_guard_skips_and_stops_under_0_3(tmp_path):
    """``[guard]`` under 0.3: the 0.2.2 test (tests/integration/test_nonfinite_guard.py) of skipped steps whose
    weights and optimizer state stay unchanged exactly, and the stop after too many in a row."""
    from integration.test_nonfinite_guard import test_skip_drops_the_update_counts_and_stops_after_too_many

    test_skip_drops_the_update_counts_and_stops_after_too_many(tmp_path)
