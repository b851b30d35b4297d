"""kdkit.host_allocator: glibc tuning that keeps freed host memory (on in the kdkit command
unless KDKIT_MALLOC_TUNING=0)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdkit import host_allocator


def test_on_unless_turned_off(monkeypatch):
    """The kdkit command tunes unless KDKIT_MALLOC_TUNING says 0 / off / false / no."""
    from kdkit import cli

    called = []
    monkeypatch.setattr(host_allocator, "keep_freed_memory", lambda: called.append(1) or True)
    cases = ((None, [1]), ("1", [1]), ("", [1]), ("0", []), ("off", []), (" No ", []))
    for value, want in cases:
        called.clear()
        if value is None:
            monkeypatch.delenv(host_allocator.ENV, raising=False)
        else:
            monkeypatch.setenv(host_allocator.ENV, value)
        with pytest.raises(SystemExit):  # argparse's --version exits after printing
            cli.main(["--version"])
        assert called == want, value


def test_off_linux_changes_nothing(monkeypatch):
    monkeypatch.setattr(host_allocator.sys, "platform", "darwin")
    assert host_allocator.keep_freed_memory() is False


def test_a_c_library_without_mallopt_is_not_an_error(monkeypatch):

    class NoMallopt:  # musl: the library loads, mallopt is absent
        def __init__(self, name):
            pass

    monkeypatch.setattr(host_allocator.ctypes, "CDLL", NoMallopt)
    assert host_allocator.keep_freed_memory() is False


_MEASURE = """
import resource, statistics, sys
import torch
from kdkit import host_allocator

def step():
    blocks = [torch.ones(4 * 1024 * 1024) for _ in range(4)]  # 4 x 16 MB, written
    del blocks

def faults_per_cycle(cycles=7):
    for _ in range(3):  # warm up: the thresholds and the heap reach their steady state
        step()
    counts = []
    for _ in range(cycles):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts)

untuned = faults_per_cycle()
tuned = host_allocator.keep_freed_memory()
print(untuned, tuned, faults_per_cycle())
"""


def _measure() -> tuple[float, bool, float]:
    """Minor page faults of one "step" (four 16 MB temporaries live at once, touched, freed),
    the median over seven steps, untuned and then tuned, in a fresh process.

    Untuned, glibc serves the blocks from the heap once its dynamic mmap threshold has risen, but
    gives the 64 MB free at the heap's top back to the kernel after each cycle (its dynamic trim
    threshold is twice the mmap threshold), so every cycle faults the pages in again. A fresh
    process keeps the heap's state independent of the tests that ran before; the median ignores
    a step in which the heap had to grow once (it then faults its new pages once, tuned or not).
    """
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, timeout=120
    )
    untuned, tuned, after = done.stdout.split()
    return float(untuned), tuned == "True", float(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    """After the call the freed blocks are reused (glibc): a step faults on almost none of its
    16,384 pages. Untuned glibc maps them afresh on most machines, but its dynamic thresholds
    make that depend on the heap's history, so only the tuned state is asserted."""
    untuned, tuned, after = _measure()
    if not tuned:
        pytest.skip("not glibc")
    assert after < 1024, (untuned, after)  # four 16 MB blocks mapped afresh: ~16,400


if __name__ == "__main__":  # both states
    untuned, tuned, after = _measure()
    print(f"untuned: {untuned:.0f} minor faults per step; tuned ({tuned}): {after:.0f}")
