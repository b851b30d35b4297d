"""Once-per-machine work that another process may be doing right now, and whether to wait for it.

Some work is shared by every process of a machine through the kdkit cache: the pre-trained code
encoder (``CACHE/pretrained/<key>``) is built once, under an OS lock, and every later user reads
it. A process that finds the lock held normally waits. A study worker must not: while another
process pre-trains, it has runs that need no teacher. It builds a teacher inside
:func:`without_waiting`; shared work found busy there raises :class:`SharedWorkBusy` instead of
blocking, and the worker runs something else and asks again later
(:class:`kdkit.study.teachers.TeacherGate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_WAIT: ContextVar[bool] = ContextVar("kdkit_wait_for_shared_work", default=True)


class SharedWorkBusy(Exception):
    """Shared work this process needs is being done by another process, and waiting is off."""

    def __init__(self, what: str, where: str | Path) -> None:
        super().__init__(f"another process is {what} ({where})")
        self.what = what
        self.where = str(where)


def may_wait() -> bool:
    """Whether shared work found busy should be waited for (the default) or reported at once."""
    return _WAIT.get()


@contextmanager
def without_waiting() -> Iterator[None]:
    """Inside this block, shared work held by another process raises :class:`SharedWorkBusy`."""
    token = _WAIT.set(False)
    try:
        yield
    finally:
        _WAIT.reset(token)
