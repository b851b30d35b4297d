"""The persistent forward grid of the kd kernels: how many rows are in flight at once.

Shared by the launcher (:mod:`kdkit.kernels.kd.triton`) and the traffic model
(:mod:`kdkit.kernels.kd.traffic`), which import it from here so neither imports the other.
"""

from __future__ import annotations

#: Fraction of the L2 cache the rows in flight may occupy.
L2_FRACTION = 0.5


def persistent_programs(n: int, bytes_per_row: int, l2_bytes: int, sms: int) -> int:
    """Programs of the persistent forward grid: in-flight rows x ``bytes_per_row`` within
    ``L2_FRACTION`` of the L2, at most 64 per multiprocessor and ``n``, at least 1."""
    fit = int(l2_bytes * L2_FRACTION) // max(1, bytes_per_row)
    return max(1, min(n, fit, 64 * sms))
