"""The first run a newcomer makes: the README's TOML example, written to a file and launched the way the README
shows (``python -m motif_titan.train --job.config_file my.toml`` in an empty folder), and once under a 2-rank
torchrun. Its output must be clean: only log lines, no warnings or lines that mean nothing on a CPU, a progress
line with the step count and the time left, a summary (loss first -> last, tokens/s, outputs), TensorBoard
event files and the log file in the dump folder, and under torchrun every line once (rank 0's)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.launch import STEP_LOSS, failure_report, run_training

README = Path(__file__).resolve().parents[2] / "README.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_LINE = re.compile(r"^\[titan\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - root - INFO - ")
# what the first run printed before motif_titan.console (see its NOISE table) and must not print again
ALARMING = ("WARNING", "Warning", "does not exist", "Peak flops", "A100", "mfu", "lspci", '"_enforced"', "{",
            "Traceback", "deprecated", "[GC]", "0.0.0 means")
PROGRESS = re.compile(r"step (\d+)/(\d+) \(\d+%\), (.+) elapsed, about (.+) left$")
SUMMARY = re.compile(r"Done: (\d+) steps in .+, loss ([0-9.]+) \(step (\d+)\) -> ([0-9.]+) \(step (\d+)\), "
                     r"([0-9,]+) tokens/s over steps \d+-\d+$")

pytestmark = pytest.mark.skipif(torch.accelerator.is_available(), reason="the first run on a CPU-only machine")


def readme_toml() -> str:
    """The README's TOML example (its only ```toml block)."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README shows one TOML: the example this test runs"
    return blocks[0]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("first_run")
    (work / "my.toml").write_text(readme_toml())
    proc = subprocess.run([sys.executable, "-m", "motif_titan.train", "--job.config_file", "my.toml"], cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, failure_report(proc)
    dump = work / "outputs" / "my_motif2"  # the example's job.dump_folder, relative to where it was launched
    return dump, proc.stdout, proc.stderr


def test_readme_toml_trains_on_a_cpu_as_shown(first_run):
    _, stdout, _ = first_run
    losses = {int(s): float(v) for s, v in STEP_LOSS.findall(ANSI.sub("", stdout))}
    assert sorted(losses) == [1, 5, 10, 15, 20], losses  # steps = 20, log_freq = 5
    assert losses[20] < losses[1] - 1.0, losses


def test_first_run_prints_only_clean_log_lines(first_run):
    _, stdout, stderr = first_run
    assert stderr == ""  # no Python warnings, no stray prints
    lines = stdout.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)]
    messages = [LOG_LINE.sub("", line) for line in lines]
    noisy = [m for m in messages if any(word in m for word in ALARMING)]
    assert noisy == [], noisy
    assert "MFU is not shown on CPU (TorchTitan has no CPU peak FLOPS); tflops is the measured rate" in messages
    assert any(m.startswith("Building motif2 debugmodel (all model args in ") for m in messages)


def test_first_run_shows_progress_and_ends_with_a_summary(first_run):
    dump, stdout, _ = first_run
    messages = [LOG_LINE.sub("", line) for line in ANSI.sub("", stdout).splitlines()]
    progress = [PROGRESS.match(m) for m in messages if PROGRESS.match(m)]
    assert progress and {int(p.group(2)) for p in progress} == {20}, messages
    assert {5, 10, 15} <= {int(p.group(1)) for p in progress}  # every metrics step but the first and the last
    summary = SUMMARY.match(messages[-2])
    assert summary, messages[-2:]
    losses = dict(STEP_LOSS.findall("\n".join(messages)))
    assert summary.group(1) == "20" and (summary.group(3), summary.group(5)) == ("1", "20")
    assert (summary.group(2), summary.group(4)) == (losses["1"], losses["20"])  # the logged digits
    assert int(summary.group(6).replace(",", "")) > 0
    assert messages[-1] == (f"Outputs in {dump}: train.log (this log), tb/ (TensorBoard: tensorboard --logdir "
                            f"{dump / 'tb'}), job_config.json, model_args.json")


def test_first_run_writes_tensorboard_and_log_files(first_run):
    dump, stdout, _ = first_run
    assert len(list((dump / "tb").glob("*/events.out.tfevents.*"))) == 1
    log = (dump / "train.log").read_text()
    assert "Training starts at step 1" in log and "Done: 20 steps" in log and not ANSI.search(log)
    assert json.loads((dump / "model_args.json").read_text())["dim"] == 256
    assert json.loads((dump / "job_config.json").read_text())["training"]["steps"] == 20
    assert not (dump / "comm_traces").exists()  # TorchTitan's flight-recorder folder, removed when empty


def test_two_ranks_log_every_line_once(tmp_path):
    """Under torchrun the console shows rank 0's log only (rank 1's warnings and errors would pass too)."""
    toml = tmp_path / "my.toml"
    toml.write_text(readme_toml())
    losses, log = run_training(tmp_path / "run", 2, "--training.steps", "3", config_file=toml, return_log=True)
    assert sorted(losses) == [1, 2, 3]
    assert len(STEP_LOSS.findall(log)) == 3, log
    for line in ("Training starts at step 1", "Done: 3 steps", "Outputs in ", "Local text dataset: "):
        assert log.count(line) == 1, (line, log)
    assert "dp rank 0 of 2" in log and "dp rank 1 of 2" not in log
    assert "WARNING" not in log and "Warning" not in log, log
    assert not (tmp_path / "run" / "train_rank1.log").exists()
