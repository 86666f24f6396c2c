"""Checkpoint manifests (motif_titan.infra.checkpoint_integrity): damaged steps are found before they are read,
the newest intact step is resumed instead, and a model-only last save can be continued.

One real 4-step run (module fixture) saves every step: steps 1-3 full, step 4 (the last) model-only, as TorchTitan
does by default. The tests copy its checkpoint folder and damage or continue the copy."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from motif_titan.infra.checkpoint_integrity import MANIFEST_NAME, verify_step, write_manifest
from helpers.launch import DEBUG_TOML, FAST, STEP_LOSS, run_training

RUN = ["--training.local_batch_size", "2", "--checkpoint.enable", "--checkpoint.interval", "1",
       "--lr_scheduler.total_steps", "4"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """(dump folder, {step: loss}) of 4 steps, a checkpoint after each, the last one model-only."""
    dump = tmp_path_factory.mktemp("integrity") / "run"
    losses = run_training(dump, 1, *RUN, "--training.steps", "4", "--checkpoint.last_save_model_only")
    assert sorted(losses) == [1, 2, 3, 4]
    return dump, losses


def copy_run(saved_run, tmp_path) -> Path:
    dump = tmp_path / "run"
    shutil.copytree(saved_run[0] / "checkpoint", dump / "checkpoint")
    return dump


def flip_bytes(path: Path, offset: int, count: int = 256) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_manifest_records_every_file_and_finds_flips_and_truncation(saved_run, tmp_path):
    step = tmp_path / "step-3"
    shutil.copytree(saved_run[0] / "checkpoint" / "step-3", step)
    manifest = json.loads((step / MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == [".metadata", "__0_0.distcp", "model_args.json"]  # the description too
    assert manifest["files"]["__0_0.distcp"]["size"] == (step / "__0_0.distcp").stat().st_size
    assert verify_step(str(step)) == []
    assert write_manifest(str(step)) == manifest  # deterministic: the same files give the same manifest

    flip_bytes(step / "__0_0.distcp", 1000)
    (problem,) = verify_step(str(step))
    assert problem.startswith("__0_0.distcp: checksum differs (crc32 of bytes 0..67108864 is")
    flip_bytes(step / "__0_0.distcp", 1000)  # flipped back: intact again
    assert verify_step(str(step)) == []

    size = (step / ".metadata").stat().st_size
    truncate(step / ".metadata", 100)
    assert verify_step(str(step)) == [f".metadata has 100 bytes, the manifest records {size} (size differs)"]
    (step / ".metadata").unlink()
    assert verify_step(str(step)) == [".metadata is missing"]


def test_damaged_latest_steps_fall_back_to_the_newest_intact_one(saved_run, tmp_path):
    """Step 4: 256 flipped bytes in its .distcp; step 3: .distcp truncated; step 2: .metadata truncated. The resume
    names each step folder and file, starts from step 1 and logs the uninterrupted run's losses for steps 2-4."""
    dump = copy_run(saved_run, tmp_path)
    ckpt = dump / "checkpoint"
    flip_bytes(ckpt / "step-4" / "__0_0.distcp", 4096)
    truncate(ckpt / "step-3" / "__0_0.distcp", 1 << 20)
    truncate(ckpt / "step-2" / ".metadata", 1000)

    losses, log = run_training(dump, 1, *RUN, "--training.steps", "4", "--checkpoint.last_save_model_only",
                               return_log=True)
    assert f"Checkpoint step 4 ({ckpt}/step-4) is damaged or incomplete: __0_0.distcp: checksum differs" in log
    assert (f"Checkpoint step 3 ({ckpt}/step-3) is damaged or incomplete: __0_0.distcp has 1048576 bytes, the "
            "manifest records") in log
    assert (f"Checkpoint step 2 ({ckpt}/step-2) is damaged or incomplete: .metadata has 1000 bytes, the manifest "
            "records") in log
    assert (f"Falling back to the newest intact checkpoint: step 1 ({ckpt}/step-1); skipped: step-4, step-3, "
            "step-2.") in log
    assert losses == {s: saved_run[1][s] for s in (2, 3, 4)}
    assert verify_step(str(ckpt / "step-4")) == []  # saved again, with a new manifest


def test_no_intact_step_stops_with_the_folder_named(saved_run, tmp_path):
    dump = copy_run(saved_run, tmp_path)
    ckpt = dump / "checkpoint"
    for step in (1, 2, 3, 4):
        truncate(ckpt / f"step-{step}" / "__0_0.distcp", 4096)
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(DEBUG_TOML), "--job.dump_folder",
           str(dump), *FAST, *RUN, "--training.steps", "4"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (f"No intact checkpoint in checkpoint folder {ckpt}: step-4, step-3, step-2, step-1 are damaged or "
            "incomplete") in log
    assert not STEP_LOSS.search(log)


def model_weights(step_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{step_dir.parent.parent.name}-{step_dir.name}.pt"
    dcp_to_torch_save(str(step_dir), str(out))
    state = torch.load(out, weights_only=False)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def test_model_only_last_save_is_continued_from_its_weights(saved_run, tmp_path):
    """Continue the finished 4-step run (its step 4 holds the model only) to step 5. Step 5 is made a skipped step
    (guard injection: no optimizer update), so the weights saved at step 5 are exactly the weights loaded."""
    dump = copy_run(saved_run, tmp_path)
    losses, log = run_training(dump, 1, *RUN, "--training.steps", "5", "--lr_scheduler.total_steps", "5",
                               "--guard.on_nonfinite", "skip", "--guard.inject_nonfinite_grad_steps", "5",
                               return_log=True)
    assert sorted(losses) == [5]
    line = (f"Checkpoint {dump}/checkpoint/step-4 holds the model only (saved with checkpoint.last_save_model_only "
            "= true): loaded its weights and continuing at step 5 with the LR schedule at step 4; the optimizer "
            "state, data position and token count start fresh. To keep full state in the last checkpoint, train "
            "with --checkpoint.no-last-save-model-only.")
    assert log.count(line) == 1
    assert "step 5: non-finite grad_norm" in log
    loaded = model_weights(saved_run[0] / "checkpoint" / "step-4", tmp_path)
    saved = model_weights(dump / "checkpoint" / "step-5", tmp_path)
    assert len(loaded) > 20 and loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)
    # trained weights, not a fresh initialisation: the first batch's loss is below the untrained step-1 loss
    assert float(losses[5]) < float(saved_run[1][1]) - 0.3, (losses, saved_run[1])


def _save_and_verify_on_two_ranks(rank, world, folder):
    """Both ranks save one DCP step (one .distcp each), write its manifest together, damage rank 1's file and
    verify together: every rank must get the single-process answer."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    state = {"w": distribute_tensor(torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64), mesh, [Shard(0)])}
    step = Path(folder) / "step-3"
    dcp.save(state, checkpoint_id=str(step))
    dist.barrier()
    manifest = write_manifest(str(step), all_ranks=True)
    dist.barrier()
    failures = []
    if sorted(manifest["files"]) != [".metadata", "__0_0.distcp", "__1_0.distcp"]:
        failures.append(f"manifest files {sorted(manifest['files'])}")
    if verify_step(str(step), all_ranks=True) != []:
        failures.append("intact step reported damaged")
    dist.barrier()
    if rank == 0:
        flip_bytes(step / "__1_0.distcp", 100)
    dist.barrier()
    together = verify_step(str(step), all_ranks=True)
    alone = verify_step(str(step))
    if not (len(together) == 1 and together[0].startswith("__1_0.distcp: checksum differs") and together == alone):
        failures.append(f"damaged: all ranks {together}, one process {alone}")
    return failures


def test_every_rank_checksums_its_share_and_gets_the_whole_answer(tmp_path):
    from helpers.gloo_ranks import run_on_gloo_ranks

    run_on_gloo_ranks(tmp_path, 2, _save_and_verify_on_two_ranks, str(tmp_path / "ckpt"))
