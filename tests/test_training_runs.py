"""Real TorchTitan training runs through motif_titan's launcher on the CPU: 1 rank, 2-rank FSDP on gloo,
and exact resume from a checkpoint."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEBUG_TOML = REPO / "train_configs" / "motif2_debug.toml"
STEP_LOSS = re.compile(r"step:\s+(\d+)\s+loss:\s+([0-9.]+)")

# Small and quick on 2 cores; every step is logged without colors so losses can be read back.
FAST = ["--training.seq_len", "128", "--training.local_batch_size", "8", "--metrics.log_freq", "1",
        "--metrics.disable_color_printing", "--debug.seed", "1234", "--lr_scheduler.warmup_steps", "2"]


def run_training(dump_folder: Path, nproc: int, *overrides: str, return_log: bool = False,
                 config_file: Path = DEBUG_TOML):
    """Run the launcher (under torchrun when nproc > 1); return {step: loss as logged} (and the log)."""
    launcher = [sys.executable, "-m", "motif_titan.train"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    "-m", "motif_titan.train"]
    cmd = [*launcher, "--job.config_file", str(config_file), "--job.dump_folder", str(dump_folder), *FAST,
           *overrides]
    # a cache of compiled code per run: inductor's on-disk cache can hand one run code compiled in another that
    # names its process groups differently ("Could not resolve the process group registered under the name 11",
    # seen with TP x FSDP here)
    env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else "2",
           "TORCHINDUCTOR_CACHE_DIR": str(dump_folder.parent / f"{dump_folder.name}-inductor-cache")}
    for attempt in (1, 2):
        proc = subprocess.run(cmd, cwd=dump_folder.parent, env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        if not _aborted_in_setup(proc.returncode, log):
            break
        # Seen in CI about once in 250 multi-rank runs: a gloo worker thread aborts the process while the process
        # groups are set up, before any step ("terminate called without an active exception"). Nothing of the
        # run has happened yet, so it is started once more; a second abort fails the test.
        print(f"run_training: setup abort on attempt {attempt}, retrying", file=sys.stderr)
    assert proc.returncode == 0, log[-4000:]
    losses = {int(step): loss for step, loss in STEP_LOSS.findall(log)}
    assert losses, log[-4000:]
    return (losses, log) if return_log else losses


def _aborted_in_setup(returncode: int, log: str) -> bool:
    return returncode != 0 and "terminate called without an active exception" in log and not STEP_LOSS.search(log)


def mean_loss(losses: dict[int, str], steps) -> float:
    return sum(float(losses[s]) for s in steps) / len(steps)


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
