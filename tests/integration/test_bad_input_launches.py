"""The launch side of the bad-input catalogue (tests/helpers/bad_train_inputs.py; every case is also checked in
process by tests/unit/test_bad_input_catalogue.py): the cases marked ``launch=True`` are run as
``python -m motif_titan.train`` for real: exit code != 0, the message, no step logged, nothing written to the dump
folder."""

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


