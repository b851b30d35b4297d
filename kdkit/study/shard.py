"""Splitting a study's runs across workers: ``--shard i/n``.

Runs are sorted by run id (a pure function of the grid file) and dealt round-robin: shard ``i``
(1-based) takes runs ``i-1, i-1+n, i-1+2n, ...``. Every worker that reads the same grid file
computes the same split with no coordination, so any job scheduler can start the ``n`` workers
(``kdkit study GRID --shard $SLURM_ARRAY_TASK_ID/$N``), the shards never overlap and together
they cover every run. Round-robin over the sorted list keeps shard sizes within one run of each
other; the cost is that adding runs to the grid may move existing runs to another shard — a
moved run that is already complete in some copy of the study is still found by ``kdkit report``,
which merges every run directory it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kdkit.errors import KdkitError

T = TypeVar("T")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        """Whether this shard is the whole study."""
        return self.count == 1


def parse_shard(text: str | None) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ``None`` -> the whole study.

    Raises:
        KdkitError: for anything but ``i/n`` with ``1 <= i <= n``.
    """
    if text is None:
        return Shard()
    m = _SHARD.match(text)
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise KdkitError(
            f"invalid shard '{text}'",
            where="--shard",
            fix="write i/n with 1 <= i <= n, e.g. --shard 1/4 on the first of four workers",
        )
    return Shard(int(m.group(1)), int(m.group(2)))


def select(items: Sequence[T], shard: Shard, key: Callable[[T], Any] = str) -> list[T]:
    """The items of ``shard``: sorted by ``key`` (the run id), then dealt round-robin."""
    ordered = sorted(items, key=key)
    return [item for k, item in enumerate(ordered) if k % shard.count == shard.index - 1]
