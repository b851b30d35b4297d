"""Rank 0 "builds" (sleeps) inside ``main_first`` longer than the collectives' timeout.

Usage (2 processes): ``KDKIT_DIST_TIMEOUT=2 torchrun ... slow_build.py SECONDS``; each rank prints
``rank R passed`` when the ordinary barrier after the build also succeeded.
"""

from __future__ import annotations

import sys
import time

from kdkit.engine.distributed import setup

if __name__ == "__main__":
    dist, _ = setup("auto", "cpu")
    with dist.main_first():
        if dist.is_main:
            time.sleep(float(sys.argv[1]))  # a dataset or teacher built once, by rank 0
    dist.barrier()  # the ordinary group (short timeout) still works afterwards
    print(f"rank {dist.rank} passed", flush=True)
    dist.close()
