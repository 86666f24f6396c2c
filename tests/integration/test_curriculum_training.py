"""The curriculum dataloader inside real TorchTitan training runs on the CPU: the debug curriculum config on 2 ranks
with both ramps, stopped and resumed from a TorchTitan checkpoint mid-ramp; and TorchTitan's own llama3 trained
through it."""

import os
import re
from pathlib import Path

from helpers.goldens import CURRICULUM_TWO_RANK_LOSSES
from helpers.launch import REPO, mean_loss, run_training

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
CURRICULUM_TOML = REPO / "train_configs" / "motif2_debug_curriculum.toml"
# The runs' seq_len is 128 (helpers.launch.FAST): the sequence-length ramp goes 64 -> 128 over steps 3..7 and
# the batch ramp from 1 to 2 micro-batches (1024 -> 2048 tokens) over steps 2..6.
RAMPS = ["--curriculum.seq_len_ramp_start", "64", "--curriculum.seq_len_ramp_steps", "3", "7",
         "--curriculum.batch_ramp_start_tokens", "1024", "--curriculum.batch_ramp_steps", "2", "6"]
TWO_RANKS = ["--parallelism.data_parallel_shard_degree", "2", "--training.local_batch_size", "4",
             "--training.global_batch_size", "16", "--lr_scheduler.total_steps", "8", *RAMPS]


def logged(log: str, name: str) -> dict[int, float]:
    return {int(step): float(value) for step, value in re.findall(rf"step (\d+): .*{re.escape(name)} ([0-9.e+]+)", log)}


def test_curriculum_run_on_two_ranks_resumes_exactly_mid_ramp(tmp_path):
    """Reference: 8 uninterrupted steps. Resumed: a checkpoint at step 4 (inside both ramps), then steps 5..8 from
    it must log exactly the reference losses. The log carries the schedule's weights and step sizes."""
    ckpt = ["--checkpoint.enable", "--checkpoint.interval", "4"]
    reference, log = run_training(tmp_path / "reference", 2, *TWO_RANKS, "--training.steps", "8", return_log=True,
                                  config_file=CURRICULUM_TOML)
    assert sorted(reference) == list(range(1, 9))
    assert reference == CURRICULUM_TWO_RANK_LOSSES  # the same under TorchTitan 0.2.2 and 0.3
    assert mean_loss(reference, range(7, 9)) < mean_loss(reference, range(1, 3)) - 0.5, reference
    assert logged(log, "curriculum/step_tokens") == {s: t for s, t in zip(range(1, 9), [1024] * 3 + [2048] * 5)}
    assert logged(log, "curriculum/row_len") == {s: t for s, t in zip(range(1, 9), [64] * 6 + [128] * 2)}
    # phase 1 of the TOML: prose 0.8 -> 0.4 over steps 1..70
    assert abs(logged(log, "curriculum/weight/prose")[8] - (0.8 - 0.4 * 7 / 69)) < 1e-4
    assert logged(log, "curriculum/tokens_seen/math")[8] > 0

    run_training(tmp_path / "resumed", 2, *TWO_RANKS, *ckpt, "--training.steps", "4", config_file=CURRICULUM_TOML)
    assert (tmp_path / "resumed" / "checkpoint" / "step-4").is_dir()
    second = run_training(tmp_path / "resumed", 2, *TWO_RANKS, *ckpt, "--training.steps", "8",
                          config_file=CURRICULUM_TOML)
    assert second == {s: reference[s] for s in range(5, 9)}


def test_curriculum_dataloader_trains_torchtitans_llama3(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    losses, log = run_training(tmp_path / "llama3", 1, *RAMPS, "--training.steps", "8", "--training.global_batch_size",
                               "16", "--experimental.custom_import", "llama3_with_motif", "--model.name",
                               "llama3_motif", "--model.flavor", "debugmodel", return_log=True,
                               config_file=CURRICULUM_TOML)
    assert mean_loss(losses, range(7, 9)) < mean_loss(losses, range(1, 3)) - 0.5, losses
    assert "Curriculum (pretrain): prose 652 documents, math 700 documents, code 747 documents" in log
    assert logged(log, "curriculum/step_tokens")[8] == 2048 * 1
