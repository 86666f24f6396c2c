"""Outputs that are either whole or absent, and temporaries that do not outlive their process.

An :class:`AtomicDirectory` is written as a hidden sibling ``.<name>.partial-<pid>`` of its destination and
renamed onto the destination when complete (``python -m motif_titan.upscale`` and
``python -m motif_titan.data.pretokenize`` both write through it). A process killed with SIGKILL cannot remove
its temporary, so the next run for the same destination does: a temporary whose owner is gone is removed and
logged, one whose owner still runs is left alone. The owner is told from the name (its pid) and from an owner
file inside the temporary (pid, boot id and the process's start time), so a pid reused by another process after a
reboot or a long time does not protect a dead run's temporary. ``terminate_on_sigterm`` turns SIGTERM (what a
preempting scheduler sends) into ``SystemExit``, so the same cleanup that runs on an error or Ctrl-C runs then.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

OWNER_FILE = ".motif_titan_owner.json"
# ``.tmp-`` is the name older pretokenize runs gave their temporaries; ``.replaced-`` holds an overwritten
# destination for the moment between the two renames of an overwrite.
_KINDS = ("partial", "tmp", "replaced")
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (field 22 of /proc/<pid>/stat), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
    return int(stat[stat.rindex(")") + 2:].split()[19])


def owner_record(pid: int | None = None) -> dict:
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "boot_id": _boot_id(), "start_time": process_start_time(pid)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_alive(pid: int, record: dict | None) -> bool:
    """Whether the process that created a temporary still runs: ``pid`` exists and, when the temporary holds an
    owner record, it is the same process (same boot, same start time), not a later one that reused the pid."""
    if not _pid_alive(pid):
        return False
    if not record or record.get("pid") != pid:
        return True  # nothing to compare: a live pid keeps its temporary
    boot = _boot_id()
    if record.get("boot_id") and boot and record["boot_id"] != boot:
        return False
    start = process_start_time(pid)
    if record.get("start_time") is not None and start is not None and record["start_time"] != start:
        return False
    return True


def _read_owner(directory: Path) -> dict | None:
    try:
        return json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None


def temporary_pattern(dst: Path) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(dst.name)}\.({'|'.join(_KINDS)})-(\d+)$")


def remove_stale_temporaries(dst: str | os.PathLike, log: Log = _stderr) -> list[Path]:
    """Remove the temporaries of ``dst`` left by dead processes; return what was removed. A stale
    ``.replaced-`` (an overwrite killed between its two renames) is moved back onto ``dst`` when ``dst`` is
    missing, since it is the last complete output."""
    dst = Path(dst)
    if not dst.parent.is_dir():
        return []
    pattern, removed = temporary_pattern(dst), []
    for path in sorted(dst.parent.iterdir()):
        match = pattern.match(path.name)
        if not match:
            continue
        kind, pid = match.group(1), int(match.group(2))
        if pid == os.getpid() or owner_alive(pid, _read_owner(path) if path.is_dir() else None):
            continue
        if kind == "replaced" and not dst.exists():
            os.rename(path, dst)
            log(f"restored {dst} from {path.name}, left by process {pid} (no longer running) in the middle of an "
                "overwrite")
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(path)
            log(f"removed {path}: a temporary of {dst} left by process {pid}, which no longer runs")
    return removed


class AtomicDirectory:
    """A temporary directory next to ``dst`` that becomes ``dst`` on :meth:`commit` and is removed on
    :meth:`abort`. ``label`` is how the user named the destination (``--dst``, ``--out``): every error says it
    with the user's path, never the temporary's. Stale temporaries of ``dst`` are removed first."""

    def __init__(self, dst: str | os.PathLike, label: str, overwrite: bool = False, make_parents: bool = False,
                 exists_hint: str = "pass --overwrite to replace it", log: Log = _stderr):
        self.dst, self.label, self.overwrite = Path(dst), label, overwrite
        self.where = f"{label} {self.dst}"
        parent = self.dst.parent
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{self.where}: {parent} is not a directory")
        if not parent.exists():
            if not make_parents:
                raise FileNotFoundError(f"{self.where}: parent directory {parent} does not exist")
            try:
                parent.mkdir(parents=True)
            except OSError as e:
                raise OSError(f"{self.where}: cannot create its parent directory {parent}: {e.strerror}") from None
        remove_stale_temporaries(self.dst, log)
        if self.dst.exists() and not overwrite:
            raise FileExistsError(f"{self.where} exists; {exists_hint}")
        self.tmp = parent / f".{self.dst.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        try:
            self.tmp.mkdir()
            (self.tmp / OWNER_FILE).write_text(json.dumps(owner_record()))
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise OSError(f"{self.where}: cannot write next to it in {parent}: {e.strerror}") from None
        self.done = False

    def commit(self) -> Path:
        """Rename the temporary onto ``dst`` (an existing ``dst`` is replaced only with ``overwrite``)."""
        (self.tmp / OWNER_FILE).unlink(missing_ok=True)
        try:
            if self.dst.exists():
                if not self.overwrite:
                    raise FileExistsError(f"{self.where} appeared while it was being written; it was kept and "
                                          "the new output discarded")
                old = self.dst.parent / f".{self.dst.name}.replaced-{os.getpid()}"
                os.rename(self.dst, old)
                os.rename(self.tmp, self.dst)
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            else:
                os.rename(self.tmp, self.dst)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.dst

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.done = True

    def user_path(self, text: str) -> str:
        """``text`` with the temporary's path replaced by the destination's (for error messages)."""
        return text.replace(str(self.tmp), str(self.dst))

    def __enter__(self) -> Path:
        return self.tmp

    def user_error(self, exc: BaseException) -> BaseException:
        """An OSError that names the temporary (disk full, permissions) as the same error naming ``dst``."""
        if isinstance(exc, OSError) and str(self.tmp) in str(exc):
            text = exc.strerror if exc.filename and exc.strerror else str(exc)
            inside = f" (writing {self.user_path(str(exc.filename))})" if exc.filename else ""
            return type(exc)(f"{self.where}: {self.user_path(text)}{inside}")
        return exc

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.abort()
        translated = self.user_error(exc)
        if translated is not exc:
            raise translated from exc


def _raise_sigterm(signum, frame):
    raise SystemExit(SIGTERM_EXIT_CODE)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` in the main thread, so ``finally`` / ``except
    BaseException`` blocks (removing temporaries) run as they do on Ctrl-C. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
