"""kdkit.host_allocator: opt-in (KDKIT_MALLOC_TUNING=1) glibc tuning that keeps freed host memory."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from kdkit import host_allocator


def test_off_unless_requested(monkeypatch):
    """The kdkit command tunes only with KDKIT_MALLOC_TUNING=1."""
    from kdkit import cli

    called = []
    monkeypatch.setattr(host_allocator, "keep_freed_memory", lambda: called.append(1) or True)
    for value, want in ((None, []), ("0", []), ("1", [1])):
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


def _faults_per_cycle(cycles: int = 5) -> float:
    """Minor page faults of one "step": four 16 MB temporaries live at once, touched, freed.

    Untuned, glibc serves them from the heap once its dynamic mmap threshold has risen, but
    gives the 64 MB free at the heap's top back to the kernel after each cycle (its dynamic trim
    threshold is twice the mmap threshold), so every cycle faults the pages in again.
    """

    def step() -> None:
        blocks = [torch.ones(4 * 1024 * 1024) for _ in range(4)]  # 4 x 16 MB, written
        del blocks

    for _ in range(3):  # warm up: the thresholds and the heap reach their steady state
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults(monkeypatch):
    """After the call the freed blocks are reused; mapped afresh they fault on their 16,384 pages
    every cycle (glibc; the test process may already be tuned by an earlier CLI test, so only
    the tuned state is asserted: `python tests/test_host_allocator.py` shows both)."""
    if not host_allocator.keep_freed_memory():
        pytest.skip("not glibc")
    assert _faults_per_cycle() < 1024  # untuned: ~16,000 (four 16 MB blocks mapped afresh)


if __name__ == "__main__":  # both states, in a fresh process
    print(f"untuned: {_faults_per_cycle():.0f} minor faults per cycle")
    print(f"tuned ({host_allocator.keep_freed_memory()}): {_faults_per_cycle():.0f}")
