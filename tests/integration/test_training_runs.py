"""Real TorchTitan launches through motif_titan's launcher on the CPU: a bad flavor or sequence length stops the
run before any step, naming the field; HSDP 2x2 trains the tied-embedding flavor. (A single-rank run's falling
loss is tests/integration/test_first_run.py's; compile with full activation checkpointing is a row of the
composition matrix.)"""

import subprocess
import sys

import pytest

from helpers.launch import DEBUG_TOML, mean_loss, run_training


@pytest.mark.parametrize("override,message", [
    (["--model.flavor", "13B"], "model.flavor = '13B' is not a motif2 flavor"),
    (["--training.seq_len", "4096"], "training.seq_len = 4096 exceeds the max_seq_len 2048"),
])
def test_bad_config_stops_at_start_with_the_field_named(tmp_path, override, message):
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(DEBUG_TOML),
           "--job.dump_folder", str(tmp_path / "run"), *override]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "step:" not in proc.stdout + proc.stderr


def test_hsdp_2x2_with_tied_embeddings_trains(tmp_path):
    """4 ranks: dp_replicate 2 x dp_shard 2, on the tied-embedding DiffAttn debug flavor (the embedding and the
    head share one FSDP unit)."""
    losses = run_training(tmp_path / "run", 4, "--model.flavor", "debugmodel_diffattn", "--training.steps", "6",
                          "--training.local_batch_size", "2", "--parallelism.data_parallel_replicate_degree", "2",
                          "--parallelism.data_parallel_shard_degree", "2")
    assert sorted(losses) == list(range(1, 7))
    assert mean_loss(losses, range(5, 7)) < mean_loss(losses, range(1, 3)) - 0.5, losses
