"""Faults of processes and bad input (issue 15): training workers die with a SIGKILLed torchrun; upscale and
pretokenize leave no temporary when SIGTERMed and remove the ones a killed run left (but not a live run's). The bad
sources and arguments of those two commands (``BAD_INPUT_CASES``, prepared by ``prepare_bad_inputs``) are run by
tests/unit/test_bad_input_catalogue.py."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from motif_titan.data import pretokenize as pretokenize_cli
from motif_titan.infra import atomic_output
from motif_titan.infra.atomic_output import owner_alive, owner_record, remove_stale_temporaries
from motif_titan.infra.lifecycle import started_by_torchrun
from motif_titan.upscale import __main__ as upscale_cli

from helpers.bad_cli_inputs import write_tiny_hf_source

REPO = Path(__file__).resolve().parents[2]
DEBUG_TOML = REPO / "train_configs" / "motif2_debug.toml"
STEP = re.compile(r"step:\s+(\d+)\s+loss:")

def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented worker that exited may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- 1. workers die with their launcher ---------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
def test_workers_die_when_torchrun_is_sigkilled(tmp_path):
    dump = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "motif_titan.train", "--job.config_file", str(DEBUG_TOML), "--job.dump_folder", str(dump),
           "--training.seq_len", "64", "--training.local_batch_size", "2", "--metrics.log_freq", "1",
           "--metrics.disable_color_printing", "--training.steps", "200", "--checkpoint.enable",
           "--checkpoint.interval", "1"]
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        torchrun = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not STEP.search(log.read_text()):
            assert torchrun.poll() is None, f"torchrun exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no step logged:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        workers = [pid for pid in _children(torchrun.pid)
                   if b"motif_titan.train" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        torchrun.kill()  # SIGKILL: torchrun forwards nothing
        torchrun.wait()
        checkpoints = dump / "checkpoint"
        at_kill = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []
        gone_by = time.monotonic() + 5
        while any(map(_running, workers)) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert [pid for pid in workers if _running(pid)] == []
        time.sleep(2)  # the workers trained a step in well under this; a survivor would have checkpointed
        after = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []
        assert after == at_kill
        logged = [int(s) for s in STEP.findall(log.read_text())]
        assert max(logged) < 200
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


LIFECYCLE = REPO / "motif_titan" / "infra" / "lifecycle.py"
# a parent that starts a child and exits; the child loads lifecycle.py (by path: no torch import), arms it and
# sleeps; the parent prints the child's pid first
_ORPHAN = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    sys.stdin.readline()
""")
_CHILD = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("lifecycle", {path!r})
    lifecycle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lifecycle)
    {patch}
    print(lifecycle.exit_with_parent(poll_seconds=0.1), file=open({marker!r}, "w"), flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("mechanism", ["prctl", "watchdog"])
def test_a_child_exits_with_its_parent(tmp_path, mechanism):
    """Both mechanisms: prctl's death signal (Linux) and the getppid watchdog (where prctl is missing)."""
    if mechanism == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux's")
    marker = tmp_path / "armed"
    patch = "lifecycle._set_parent_death_signal = lambda sig: False" if mechanism == "watchdog" else ""
    child_code = _CHILD.format(path=str(LIFECYCLE), patch=patch, marker=str(marker))
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, child_code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while not (marker.is_file() and marker.read_text().strip()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert marker.read_text().strip() == mechanism
        assert _running(child)
        parent.kill()
        parent.wait()
        gone_by = time.monotonic() + 3
        while _running(child) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def test_a_launcher_that_died_before_arming_is_seen(monkeypatch):
    """The race prctl leaves open: the parent read before arming is compared with the parent after it."""
    from motif_titan.infra import lifecycle

    assert not lifecycle._launcher_gone(os.getppid())
    assert lifecycle._launcher_gone(os.getppid() + 1)  # reparented since
    monkeypatch.setattr(lifecycle.os, "getppid", lambda: 1)
    pid1 = Path("/proc/1/cmdline").read_bytes() if Path("/proc/1/cmdline").exists() else b""
    assert lifecycle._launcher_gone(1) == (b"torch" not in pid1)  # adopted by init, unless init is torchrun


def test_only_torchrun_workers_arm_the_death_signal():
    assert started_by_torchrun({"LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "x"})
    # motif_titan.train sets LOCAL_RANK itself for a plain run: that alone is no launcher
    assert not started_by_torchrun({"LOCAL_RANK": "0", "RANK": "0"})
    assert not started_by_torchrun({})


# --- 2. temporaries: removed on SIGTERM, and by the next run when their owner was killed --------------------------



@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    return write_tiny_hf_source(tmp_path_factory.mktemp("faults") / "hf")


# each wrapper runs the real CLI's main, slowed at one point so that the test can signal it while it writes
_SLOW_UPSCALE = textwrap.dedent("""
    import pathlib, sys, time
    from motif_titan.upscale import upscaler
    from motif_titan.upscale.__main__ import main
    real, calls = upscaler.Upscaler.tensor, []
    def slow(self, key):
        calls.append(key)
        if len(calls) == 5:
            pathlib.Path(sys.argv[1]).touch()
            time.sleep(120)
        return real(self, key)
    upscaler.Upscaler.tensor = slow
    sys.exit(main(sys.argv[2:]))
""")
_SLOW_PRETOKENIZE = textwrap.dedent("""
    import pathlib, sys, time
    from motif_titan.data import pretokenize
    pretokenize.BATCH_DOCUMENTS = 16
    real, calls = pretokenize.encode_batch, []
    def slow(tokenizer, texts):
        calls.append(1)
        if len(calls) == 3:
            pathlib.Path(sys.argv[1]).touch()
            time.sleep(120)
        return real(tokenizer, texts)
    pretokenize.encode_batch = slow
    sys.exit(pretokenize.main(sys.argv[2:]))
""")


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("command", ["upscale", "pretokenize"])
def test_sigterm_mid_write_leaves_no_temporary(hf_source, tmp_path, command):
    marker = tmp_path / "writing"
    work = tmp_path / "work"
    work.mkdir()
    if command == "upscale":
        script, argv = _SLOW_UPSCALE, ["--src", str(hf_source), "--dst", str(work / "out")]
    else:
        script, argv = _SLOW_PRETOKENIZE, ["--out", str(work / "out"), "embedded:prose"]
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (temporary,) = _temporaries(work)
        assert temporary == f".out.partial-{proc.pid}"
        assert len(list((work / temporary).iterdir())) >= 2  # the owner file and data: caught mid-write
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert list(work.iterdir()) == []  # neither the output nor its temporary


def _owned_by(directory: Path, record: dict) -> Path:
    directory.mkdir()
    (directory / atomic_output.OWNER_FILE).write_text(json.dumps(record))
    (directory / "tokens.bin").write_bytes(b"\0" * 64)
    return directory


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _stale_and_live(work: Path, live_pid: int) -> tuple[list[str], list[str]]:
    """Temporaries of ``work/out``: (those a run must remove, those it must keep)."""
    dead = _dead_pid()
    _owned_by(work / f".out.partial-{dead}", owner_record(dead))
    (work / f".out.tmp-{dead}").mkdir()  # the name older pretokenize runs used, no owner file
    stale = [f".out.partial-{dead}", f".out.tmp-{dead}"]
    reused = owner_record(os.getppid())  # a live pid whose record says another, earlier process made it
    if reused["start_time"] is not None:
        _owned_by(work / f".out.partial-{reused['pid']}", {**reused, "start_time": reused["start_time"] - 1})
        stale.append(f".out.partial-{reused['pid']}")
    _owned_by(work / f".out.partial-{live_pid}", owner_record(live_pid))
    _owned_by(work / f".out.partial-{live_pid}x", owner_record(dead))  # not a temporary's name
    (work / f".other.partial-{dead}").mkdir()  # another destination's
    return sorted(stale), sorted([f".out.partial-{live_pid}", f".out.partial-{live_pid}x", f".other.partial-{dead}"])


def test_owner_liveness_sees_dead_pids_and_reused_pids(live_process):
    assert owner_alive(live_process, owner_record(live_process))
    assert owner_alive(live_process, None)  # no record: a live pid keeps its temporary
    assert not owner_alive(_dead_pid(), None)
    if owner_record(live_process)["start_time"] is not None:
        newer = {**owner_record(live_process), "start_time": owner_record(live_process)["start_time"] - 1}
        assert not owner_alive(live_process, newer)
    other_boot = {**owner_record(live_process), "boot_id": "another-boot"}
    assert owner_alive(live_process, other_boot) == (owner_record(live_process)["boot_id"] is None)


@pytest.mark.parametrize("command", ["upscale", "pretokenize"])
def test_next_run_removes_dead_runs_temporaries_only(hf_source, tmp_path, capsys, live_process, command):
    work = tmp_path / "work"
    work.mkdir()
    stale, kept = _stale_and_live(work, live_process)
    if command == "upscale":
        code = upscale_cli.main(["--src", str(hf_source), "--dst", str(work / "out"), "--verify-tokens", "0"])
        written = ".metadata"
    else:
        code = pretokenize_cli.main(["--out", str(work / "out"), "embedded:math"])
        written = "token_shard.json"
    assert code == 0
    assert sorted(p.name for p in work.iterdir()) == sorted(["out", *kept])
    assert (work / "out" / written).is_file()
    assert not (work / "out" / atomic_output.OWNER_FILE).exists()
    err = capsys.readouterr().err
    for name in stale:
        assert f"removed {work / name}: a temporary of {work / 'out'} left by process " in err
    assert (work / f".out.partial-{live_process}" / "tokens.bin").stat().st_size == 64


def test_an_overwrite_killed_between_its_renames_is_restored(tmp_path, capsys):
    dead = _dead_pid()
    (tmp_path / f".out.replaced-{dead}").mkdir()
    (tmp_path / f".out.replaced-{dead}" / "keep.txt").write_text("previous output")
    assert remove_stale_temporaries(tmp_path / "out", log=print) == []
    assert (tmp_path / "out" / "keep.txt").read_text() == "previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert f"restored {tmp_path / 'out'} from .out.replaced-{dead}" in capsys.readouterr().out


# --- 3. bad input: one error line naming the file or argument, nothing written ------------------------------------



