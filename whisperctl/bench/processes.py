"""The processes of ``bench --engines`` and the files they share, none of which may outlive the run.

* :func:`scratch`: the run's temporary directory (the decoded inputs, about 4 MB per minute of audio, and each
  engine's spec, log and result). It is removed when the run ends; a run killed outright (SIGKILL, the OOM killer)
  cannot remove it, so every run first removes those whose run is gone (:func:`sweep`). A live run holds an
  ``flock`` on ``.lock`` inside its directory: the kernel releases it when the process dies, however it dies, and
  a reused process id cannot keep a dead run's directory alive.
* :func:`run_child` and :func:`die_with_parent`: an engine's process ends with the bench that started it. On Linux
  the kernel kills it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); everywhere, a thread of the
  child waits on a pipe only the parent holds open and ends the child when it closes. Interrupted (Ctrl-C,
  SIGTERM), the parent kills the child before it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

PREFIX = "whisperctl-engines-"
_LOCK = ".lock"
#: a directory without its lock is one whose run died between creating it and locking it (microseconds apart),
#: or one a filesystem without locks holds: only this old is it taken for abandoned
_UNLOCKED_STALE_S = 3600.0


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary directory, locked while the run lives and removed when it ends; abandoned ones go first."""
    sweep()
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    fd = os.open(path / f"{_LOCK}.new", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        with contextlib.suppress(OSError):  # no locks on this filesystem: the sweep goes by age
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(path / f"{_LOCK}.new", path / _LOCK)  # visible only once locked: a sweep never sees it unlocked
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch directories under ``root`` (the temporary directory) whose run is gone; return them."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _abandoned(path: Path) -> bool:
    try:
        fd = os.open(path / _LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return path.is_dir() and time.time() - path.stat().st_mtime > _UNLOCKED_STALE_S
        return False
    except OSError:  # not ours to judge (another user's, a link)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True  # nobody holds it: its run is gone
    except BlockingIOError:
        return False  # a live run's
    except OSError:  # no locks on this filesystem
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > _UNLOCKED_STALE_S
        return False
    finally:
        os.close(fd)


def run_child(args: list[str], log: BinaryIO, env: dict[str, str]) -> int:
    """Run an engine's process to its end and return its exit status; the process is given a pipe whose closing
    (this process's death) ends it (:func:`die_with_parent`), and is killed if this process is interrupted."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: the engine must not run on without its bench
            proc.kill()
            proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process (an engine's, started by :func:`run_child`) end when the bench process ``parent_pid``
    does, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was asked for
        os._exit(1)
    threading.Thread(target=_exit_when_stdin_closes, name="die-with-parent", daemon=True).start()


def _exit_when_stdin_closes() -> None:
    """The fallback where the kernel cannot signal a parent's death: stdin is a pipe that nothing is ever written
    to; reading it returns only when the parent's end closes."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(1 << 16):
            pass
    os._exit(1)
