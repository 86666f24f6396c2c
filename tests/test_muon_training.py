"""Muon inside real TorchTitan training runs on the CPU (2-rank FSDP on gloo) for TorchTitan's own llama3, and the
[optimizer] validation. Muon on motif2 across every parallel layout, with MuonClip and resume, is the composition
matrix (tests/test_composition_matrix.py)."""

import os
from pathlib import Path

import pytest
from torchtitan.config import ConfigManager

from motif_titan.optim.builder import validate_muon_config
from test_training_runs import mean_loss, run_training

PLUGINS = Path(__file__).resolve().parent / "plugins"
PARALLEL_MUON = ["--parallelism.data_parallel_shard_degree", "2", "--training.local_batch_size", "4",
                 "--optimizer.name", "ParallelMuon", "--optimizer.lr", "0.02", "--optimizer.chunk_size", "8",
                 "--lr_scheduler.total_steps", "10"]


def test_muon_builder_trains_torchtitans_llama3(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    losses = run_training(tmp_path / "llama3", 2, *PARALLEL_MUON, "--training.steps", "8",
                          "--experimental.custom_import", "llama3_with_motif", "--model.name", "llama3_motif",
                          "--model.flavor", "debugmodel")
    assert mean_loss(losses, range(6, 9)) < mean_loss(losses, range(1, 3)) - 0.5, losses


def _optimizer_config(*cli):
    return ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config", *cli]).optimizer


@pytest.mark.parametrize("cli,message", [
    (["--optimizer.name", "Lion"], "optimizer.name = 'Lion'; allowed: ['DistributedMuon', 'Muon', 'ParallelMuon', "
                                   "'AdamW', 'Adam']"),
    (["--optimizer.name", "ParallelMuon", "--optimizer.ns_coefficients", "kimi"],
     "optimizer.ns_coefficients = 'kimi'; allowed: ['keller', 'motif']"),
    (["--optimizer.name", "ParallelMuon", "--optimizer.assignment", "random"],
     "optimizer.assignment = 'random'; allowed: ['flops_round_robin', 'lpt', 'round_robin']"),
    (["--optimizer.name", "Muon", "--optimizer.chunk_size", "0"], "optimizer.chunk_size = 0; allowed: >= 1"),
    (["--optimizer.name", "Muon", "--optimizer.adjust_lr", "kimi"],
     "optimizer.adjust_lr = 'kimi'; allowed: ['match_rms_adamw', 'original']"),
])
def test_bad_muon_config_names_the_field(cli, message):
    with pytest.raises(ValueError) as error:
        validate_muon_config(_optimizer_config(*cli))
    assert str(error.value) == message


def test_bad_muonclip_values_name_the_field():
    with pytest.raises(ValueError, match=r"optimizer.qk_clip_threshold = -1.0; allowed: 0 \(off\) or > 0"):
        validate_muon_config(_optimizer_config("--optimizer.name", "ParallelMuon",
                                               "--optimizer.qk_clip_threshold", "-1"))
    with pytest.raises(ValueError, match=r"optimizer.qk_clip_alpha = 1.5; allowed: 0 <= qk_clip_alpha <= 1"):
        validate_muon_config(_optimizer_config("--optimizer.name", "ParallelMuon", "--optimizer.qk_clip_alpha", "1.5"))


def test_muonclip_needs_a_model_that_describes_its_heads(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(AssertionError, match=r"optimizer.qk_clip_threshold = 100.0 needs a model that describes"):
        run_training(tmp_path / "llama3", 2, *PARALLEL_MUON, "--training.steps", "2",
                     "--experimental.custom_import", "llama3_with_motif", "--model.name", "llama3_motif",
                     "--optimizer.qk_clip_threshold", "100")
