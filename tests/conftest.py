"""Without a GPU, run Triton kernels through the interpreter (decided when a kernel is decorated, so this must
happen before motif_titan is imported)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# ---- one seed checkpoint and one single-rank reference run, shared by the TP / PP run tests -------------------

import re
import subprocess
import sys

import pytest

GRAD_NORM = re.compile(r"step:\s+(\d+)\s+loss:\s+[0-9.]+\s+grad_norm:\s+([0-9.]+)")
SHORT_RUN = ["--training.steps", "4", "--training.local_batch_size", "4", "--lr_scheduler.warmup_steps", "2"]


@pytest.fixture(scope="session")
def seed_checkpoint(tmp_path_factory) -> str:
    """The debug model's initial weights saved once (TorchTitan's --checkpoint.create_seed_checkpoint), so runs
    that split the model differently (TP, PP) start from the same values as a single-rank run."""
    from test_training_runs import DEBUG_TOML

    dump = tmp_path_factory.mktemp("seed") / "run"
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(DEBUG_TOML), "--job.dump_folder",
           str(dump), "--checkpoint.enable", "--checkpoint.create_seed_checkpoint", "--debug.seed", "1234",
           "--parallelism.data_parallel_shard_degree", "1", "--training.steps", "1"]
    proc = subprocess.run(cmd, cwd=dump.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    step0 = dump / "checkpoint" / "step-0"
    assert (step0 / ".metadata").is_file()
    return str(step0)


def grad_norms_of(log: str) -> dict[int, str]:
    """{step: grad_norm as logged} (steps whose logged loss is -1, i.e. not a last pipeline stage, are skipped)."""
    return {int(step): norm for step, norm in GRAD_NORM.findall(log)}


def from_seed(seed_checkpoint: str) -> list[str]:
    return ["--checkpoint.enable", "--checkpoint.initial_load_path", seed_checkpoint, "--checkpoint.interval", "100"]


GDA_LAMBDA = re.compile(r"step (\d+): .*gda/lambda_min (-?[0-9.e+-]+), gda/lambda_max (-?[0-9.e+-]+)")
QK_CLIP = re.compile(r"step (\d+): qk_clip/max_logit ([0-9.]+), qk_clip/heads_clipped (\d+)")


def check_muonclip_run_tracks_single_rank(tmp_path, seed_checkpoint: str, nproc: int, *layout: str) -> None:
    """ParallelMuon + MuonClip with threshold 0.3 (the debug model's max logits are about 0.55 at init, so tens of
    heads are clipped every step), once on one rank and once on ``nproc`` ranks with ``layout``, from the seed
    checkpoint: same losses, max logits and clipped-head counts. Newton-Schulz runs in bf16 on gradients summed in
    a different order, so the runs drift apart by ~1e-4 per step: steps 1-3 are compared."""
    from test_training_runs import run_training

    muon = [*SHORT_RUN, *from_seed(seed_checkpoint), "--optimizer.name", "ParallelMuon", "--optimizer.lr", "0.02",
            "--optimizer.qk_clip_threshold", "0.3"]
    reference, ref_log = run_training(tmp_path / "reference", 1, *muon, return_log=True)
    losses, log = run_training(tmp_path / "parallel", nproc, *muon, *layout, return_log=True)
    ref_clips = {int(step): (float(m), int(n)) for step, m, n in QK_CLIP.findall(ref_log)}
    clips = {int(step): (float(m), int(n)) for step, m, n in QK_CLIP.findall(log)}
    assert sorted(ref_clips) == sorted(clips) == [1, 2, 3, 4], (clips, ref_clips)
    assert all(n >= 10 for _, n in ref_clips.values()), ref_clips
    for step in (1, 2, 3):
        assert float(losses[step]) == pytest.approx(float(reference[step]), abs=1e-3), (losses, reference)
        assert clips[step][0] == pytest.approx(ref_clips[step][0], abs=2e-3), (clips, ref_clips)
    # which heads cross the threshold: identical while the runs agree closely (later, a head at the threshold
    # may flip with the drift)
    assert clips[1][1] == ref_clips[1][1] and clips[2][1] == ref_clips[2][1], (clips, ref_clips)
