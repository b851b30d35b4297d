"""Progress bars that suit where the output goes.

On a terminal (or in a Jupyter notebook) :func:`progress_bar` is a ``tqdm`` bar. Anywhere else —
a log file, a pipe, a CI job — a redrawn bar would write a carriage return per update (a log file
of ``\\r`` floods), so it becomes :class:`PlainProgress`: a plain line now and then
(``train: 40/120 (33%) 2.10 step/s, elapsed 0:00:19, ETA 0:00:38, loss=0.5123``; below one
unit a second, seconds per unit: ``study offline: 3/10 (30%) 95.2 s/run, ...``), at most one per
``KDKIT_PROGRESS_SECONDS`` seconds (default 30) plus the last one, never a ``\\r``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

#: Seconds between two plain progress lines (``KDKIT_PROGRESS_SECONDS`` overrides it).
PLAIN_INTERVAL = 30.0


def interactive(stream: IO[str]) -> bool:
    """Whether ``stream`` redraws in place: a terminal, or a Jupyter kernel's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or odd stream
        return False
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (as tqdm shows ETAs)."""
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """The part of tqdm's interface kdkit uses, as occasional plain lines.

    Args:
        total: the number of units (``None``: unknown; no percentage or ETA).
        initial: units already done (a resumed run).
        desc: what is counted (the line's prefix).
        unit: the unit's name.
        disable: print nothing.
        file: where the lines go (default: stderr).
        interval: seconds between two lines (default: ``KDKIT_PROGRESS_SECONDS`` or 30).
    """

    def __init__(
        self,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        file: IO[str] | None = None,
        interval: float | None = None,
        **_ignored: Any,
    ) -> None:
        self.total, self.n, self.desc, self.unit, self.disable = total, initial, desc, unit, disable
        self.file = file
        if interval is None:
            interval = float(os.environ.get("KDKIT_PROGRESS_SECONDS", PLAIN_INTERVAL))
        self.interval = interval
        self.start_n = initial
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.printed_n: int | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        """The progress line as it would be printed now."""
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n}")
        speed = f"{1 / rate:.1f} s/{self.unit}" if 0 < rate < 1 else f"{rate:.2f} {self.unit}/s"
        parts.append(f" {speed}, elapsed {format_seconds(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f", ETA {format_seconds((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _print(self) -> None:
        out = self.file if self.file is not None else sys.stderr
        print(self.line(), file=out, flush=True)
        self.printed_n, self.last = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        """``n`` more units done; prints a line when ``interval`` seconds passed since the last."""
        self.n += n
        if not self.disable and time.monotonic() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line (``loss=0.5123``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        """Print ``text`` as its own line (tqdm's ``write``)."""
        print(text, file=self.file if self.file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        """Print the final line (unless nothing moved since the last one)."""
        if not self.disable and self.printed_n != self.n and self.n > self.start_n:
            self._print()
        self.disable = True


def progress_bar(*, file: IO[str] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal or notebook, else a :class:`PlainProgress`; tqdm's arguments
    (``total``, ``initial``, ``desc``, ``unit``, ``disable``, ``leave``, ...) and
    ``interval`` (the plain lines' seconds apart)."""
    stream = file if file is not None else sys.stderr
    interval = kwargs.pop("interval", None)  # PlainProgress's own; tqdm refuses it
    if kwargs.get("disable") or not interactive(stream):
        return PlainProgress(file=file, interval=interval, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(file=file, **kwargs)
