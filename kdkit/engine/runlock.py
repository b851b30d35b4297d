"""One run per run directory: an OS-level lock on ``RUN_DIR/.kdkit-run.lock``.

Two ``kdkit run`` on one ``output_dir`` would mix their files (a summary from one, the config
from the other, interleaved metrics). The run holds an exclusive ``fcntl.flock`` on the lock
file for its whole life; a second run finds it taken and refuses, naming the holder (pid, host,
start time, which the holder writes into the file). The kernel releases the lock when the
holder's process ends, however it ends (``kill -9`` included), so a stale lock file never blocks
a later run. Study workers and cache builds each use their own directories and are not affected.

On a platform without ``fcntl`` (Windows) the lock is not taken.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from kdkit.errors import KdkitError

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file inside a run directory.
LOCK_FILE = ".kdkit-run.lock"


class RunLock:
    """The exclusive lock of one run directory (a context manager; :meth:`release` frees it)."""

    def __init__(self, run_dir: Path, handle: IO[str] | None) -> None:
        self.run_dir = run_dir
        self._handle = handle

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a new holder)."""
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"pid {info['pid']} on {info.get('host', '?')}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def lock_run_dir(run_dir: str | os.PathLike[str]) -> RunLock:
    """Take the run directory's lock (creating the directory), or refuse if a run holds it.

    Raises:
        KdkitError: another live process holds the lock; the message names it.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdkitError(
            f"cannot create the run directory: {exc.strerror or exc}",
            where=str(run_dir),
            fix="choose a writable output_dir (--set output_dir=...)",
        ) from None
    if fcntl is None:  # pragma: no cover - Windows
        return RunLock(run_dir, None)
    path = run_dir / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")  # held for the run's life
    except OSError as exc:
        raise KdkitError(
            f"cannot write in the run directory: {exc.strerror or exc}",
            where=str(path),
            fix="choose a writable output_dir (--set output_dir=...)",
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise KdkitError(
            f"another kdkit run is using this directory ({_holder(path)})",
            where=str(run_dir),
            fix="wait for it to finish (then `kdkit run --resume` continues it if it stopped), "
            "or give this run another directory with --set output_dir=...",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    )
    handle.flush()
    return RunLock(run_dir, handle)
