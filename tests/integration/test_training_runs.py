"""Real TorchTitan training runs through motif_titan's launcher on the CPU: 1 rank, 2-rank FSDP on gloo,
and exact resume from a checkpoint."""

import subprocess
import sys

import pytest

from helpers.launch import DEBUG_TOML, mean_loss, run_training


def test_single_rank_run_loss_falls(tmp_path):
    losses = run_training(tmp_path / "run", 1, "--training.steps", "20")
    assert sorted(losses) == list(range(1, 21))
    # batches alternate between prose, math and code, so compare averages, not single steps
    assert mean_loss(losses, range(16, 21)) < mean_loss(losses, range(1, 3)) - 1.0, losses


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


def test_compile_and_full_activation_checkpointing_keep_the_losses(tmp_path):
    plain = run_training(tmp_path / "plain", 1, "--training.steps", "3")
    compiled = run_training(tmp_path / "compiled", 1, "--training.steps", "3", "--compile.enable",
                            "--activation_checkpoint.mode", "full")
    # equal up to the last logged digit: compiled CPU attention with the 2d-wide value (the noise attention's one
    # call) rounds differently from eager's, which moved step 3's loss by one unit of the fifth decimal
    assert plain.keys() == compiled.keys()
    assert {s: float(v) for s, v in compiled.items()} == pytest.approx({s: float(v) for s, v in plain.items()},
                                                                          rel=0, abs=1.5e-5)


def test_hsdp_2x2_with_tied_embeddings_trains(tmp_path):
    """4 ranks: dp_replicate 2 x dp_shard 2, on the tied-embedding DiffAttn debug flavor (the embedding and the
    head share one FSDP unit)."""
    losses = run_training(tmp_path / "run", 4, "--model.flavor", "debugmodel_diffattn", "--training.steps", "6",
                          "--training.local_batch_size", "2", "--parallelism.data_parallel_replicate_degree", "2",
                          "--parallelism.data_parallel_shard_degree", "2")
    assert sorted(losses) == list(range(1, 7))
    assert mean_loss(losses, range(5, 7)) < mean_loss(losses, range(1, 3)) - 0.5, losses
