"""Muon inside real TorchTitan training runs on the CPU (2-rank FSDP on gloo) for TorchTitan's own llama3, and the
[optimizer] validation. Muon on motif2 across every parallel layout, with MuonClip and resume, is the composition
matrix (tests/integration/test_composition_matrix.py)."""

import os
from pathlib import Path

import pytest

from helpers.launch import mean_loss, run_training

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PARALLEL_MUON = ["--parallelism.data_parallel_shard_degree", "2", "--training.local_batch_size", "4",
                 "--optimizer.name", "ParallelMuon", "--optimizer.lr", "0.02", "--optimizer.chunk_size", "8",
                 "--lr_scheduler.total_steps", "10"]


def test_muon_builder_trains_torchtitans_llama3(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    losses = run_training(tmp_path / "llama3", 2, *PARALLEL_MUON, "--training.steps", "8",
                          "--experimental.custom_import", "llama3_with_motif", "--model.name", "llama3_motif",
                          "--model.flavor", "debugmodel")
    assert mean_loss(losses, range(6, 9)) < mean_loss(losses, range(1, 3)) - 0.5, losses








def test_muonclip_needs_a_model_that_describes_its_heads(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(AssertionError, match=r"optimizer.qk_clip_threshold = 100.0 needs a model that describes"):
        run_training(tmp_path / "llama3", 2, *PARALLEL_MUON, "--training.steps", "2",
                     "--experimental.custom_import", "llama3_with_motif", "--model.name", "llama3_motif",
                     "--optimizer.qk_clip_threshold", "100")
