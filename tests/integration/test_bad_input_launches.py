"""Catalogue of bad inputs: each is refused before any work, by a message that names the field (``section.field =
value`` and what is allowed) or the file (and its 1-based line).

Every case runs in process through what ``python -m motif_titan.train`` runs before training: the launcher's TOML
key check (``motif_titan.validate.check_config_file``), TorchTitan's ConfigManager (tyro refuses a wrong CLI type
itself), ``motif_titan.validate.validate_job_config`` (what ``CurriculumTrainer.__init__`` calls before TorchTitan
builds anything) and, for data cases, the dataloader builder (which runs before the model is built). A few cases
(``launch=True``) are also launched for real: exit code != 0, the message, no step logged, no checkpoint written.

Add a case by appending a ``Case`` to ``CASES``.

The other commands' bad input (upscale's damaged sources, pretokenize's arguments: ``BAD_INPUT_CASES`` of
tests/integration/test_process_faults.py) runs through their ``main(argv)``: exit code 2, one message naming the argument or
file, no traceback, nothing written. Damaged checkpoints (``DAMAGED_CHECKPOINTS``) are named by the manifest check
that runs before a step is loaded (tests/integration/test_checkpoint_integrity.py launches the trainer on them: it names the
step and file, falls back to the newest intact step, or stops when none is intact).
"""

import subprocess
import sys

import pytest

from helpers.bad_train_inputs import CASES, case_args


@pytest.mark.parametrize("case", [c for c in CASES if c.launch], ids=lambda c: c.id)
def test_launcher_refuses_before_any_work(case, tmp_path):
    """A real launch: exit code != 0, the message, no step, nothing in the dump folder but logs."""
    dump = tmp_path / "run"
    cmd = [sys.executable, "-m", "motif_titan.train", *case_args(case, tmp_path), "--job.dump_folder", str(dump)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert case.message in log, log[-3000:]
    assert "step:" not in log
    assert not (dump / "checkpoint").exists()
    written = sorted(p.relative_to(dump).as_posix() for p in dump.rglob("*") if p.is_file()) if dump.exists() else []
    assert written == [], written


