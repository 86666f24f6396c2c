"""The non-finite guard (motif_titan.infra.nonfinite_guard) in real training runs: "stop" ends the run before the
bad step's optimizer update and checkpoint, "skip" drops the step's update, counts skips and stops after too
many in a row."""

import re
import subprocess
import sys
from pathlib import Path

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from helpers.launch import DEBUG_TOML, FAST, STEP_LOSS

RUN = ["--training.local_batch_size", "2", "--checkpoint.enable", "--checkpoint.interval", "1"]


def launch(dump: Path, *overrides: str) -> tuple[int, str, dict[int, float]]:
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(DEBUG_TOML), "--job.dump_folder",
           str(dump), *FAST, *RUN, *overrides]
    proc = subprocess.run(cmd, cwd=dump.parent, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    return proc.returncode, log, {int(s): float(v) for s, v in STEP_LOSS.findall(log)}


def saved_steps(dump: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (dump / "checkpoint").glob("step-*"))


def flat_tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else []
    return {k: v for key, value in items for k, v in flat_tensors(value, f"{prefix}.{key}" if prefix else
                                                                 str(key)).items()}


def model_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (model weights and optimizer moments and step counts), by flattened key."""
    out = step_dir.parent.parent / f"{step_dir.name}.pt"
    dcp_to_torch_save(str(step_dir), str(out))
    return flat_tensors(torch.load(out, weights_only=False))




def test_stop_ends_the_run_before_the_bad_step_is_saved(tmp_path):
    """lr 1e4 without warmup: AdamW's first update blows the weights up and step 2's gradients are NaN."""
    dump = tmp_path / "run"
    rc, log, losses = launch(dump, "--training.steps", "4", "--optimizer.lr", "1e4", "--lr_scheduler.warmup_steps",
                             "0")
    assert rc != 0
    assert re.search(r"NonFiniteStepError: step 2: non-finite grad_norm \(loss [0-9.e+]+ on this rank, grad_norm "
                     r"nan\); stopping before the optimizer step \(guard.on_nonfinite = 'stop'\)", log), log[-3000:]
    assert sorted(losses) == [1]
    assert saved_steps(dump) == [1]


def test_skip_drops_the_update_counts_and_stops_after_too_many(tmp_path):
    """NaN gradients injected at steps 2, 3 and 5, 6, 7 with max_consecutive_skips 2: steps 2-3 and 5-6 are
    skipped (weights and optimizer state unchanged, exactly), step 4 trains, step 7 (the third in a row) stops."""
    dump = tmp_path / "run"
    rc, log, losses = launch(dump, "--training.steps", "8", "--guard.on_nonfinite", "skip",
                             "--guard.max_consecutive_skips", "2",
                             "--guard.inject_nonfinite_grad_steps", "2", "3", "5", "6", "7")
    assert rc != 0
    assert "step 3: non-finite grad_norm" in log and "(2 consecutive, 2 skipped in total;" in log
    assert "step 6: non-finite grad_norm" in log and "(2 consecutive, 4 skipped in total;" in log
    assert ("step 7: non-finite grad_norm (loss" in log and "grad_norm nan); 3 consecutive non-finite steps exceed "
            "guard.max_consecutive_skips = 2: stopping") in log
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # step 7 stopped before its metrics were logged
    assert all(v == v and v < 20 for v in losses.values()), losses  # finite, sane losses
    assert saved_steps(dump) == [1, 2, 3, 4, 5, 6]

    w = {s: model_weights(dump / "checkpoint" / f"step-{s}") for s in (1, 3, 4, 6)}
    assert len(w[1]) > 100 and w[1].keys() == w[3].keys()
    assert all(torch.equal(w[1][k], w[3][k]) for k in w[1])  # steps 2, 3: no update (weights, moments, step)
    assert all(torch.equal(w[4][k], w[6][k]) for k in w[4])  # steps 5, 6: no update
    model = [k for k in w[1] if not k.startswith(("optimizer", "lr_scheduler", "dataloader", "train_state"))]
    assert not all(torch.equal(w[3][k], w[4][k]) for k in model)  # step 4 trained
