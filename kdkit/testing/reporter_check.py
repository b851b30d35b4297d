"""Conformance check of a reporter (:class:`kdkit.api.Reporter`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kdkit.api import Options, Reporter, RunInfo

#: The events :func:`check_reporter` sends, in run order.
EVENTS = ("start", "step", "step", "evaluation", "evaluation", "finish")


def check_reporter(
    factory: str | Callable[..., Any],
    options: Options | Mapping[str, Any] | None = None,
    *,
    run_dir: str | os.PathLike[str],
) -> Reporter:
    """Check a reporter: it builds, takes every event of a short run, and only observes.

    Sends ``start``, two ``step`` events, a validation and a test ``evaluation`` and ``finish``
    with realistic values. The records, metrics and summary are read-only mappings, so a
    reporter that modifies what it is given fails; one that writes files must keep them inside
    ``run_dir``; the options round-trip. Returns the reporter so a test can inspect what it
    wrote.

    Args:
        factory: a registered reporter name, or the factory itself.
        options: an options instance (or a mapping, with a name) — defaults otherwise.
        run_dir: an empty directory to use as the run directory.
    """
    from kdkit.testing.checks import _resolve, check_options_roundtrip

    fn, opts, _ = _resolve("reporter", factory, options)
    check_options_roundtrip(opts)
    reporter = fn(opts, None)
    assert isinstance(reporter, Reporter), (
        f"factory returned {type(reporter).__name__}, not a kdkit.api.Reporter"
    )
    run_dir = Path(run_dir)
    outside = run_dir.parent
    before = set(outside.iterdir())
    info = RunInfo(
        str(run_dir),
        MappingProxyType({"seed": 0}),
        2,
        MappingProxyType({"method": "kd", "task": "tiny"}),
    )
    frozen = MappingProxyType
    reporter.start(info)
    for step in (1, 2):
        reporter.step(info, step, frozen({"loss": 1.0 / step, "ce": 0.5 / step, "lr": 1e-3}))
    reporter.evaluation(info, 2, "validation", frozen({"accuracy": 0.5, "f1": 0.25}))
    reporter.evaluation(info, 2, "test", frozen({"accuracy": 0.75, "f1": 0.5}))
    reporter.finish(
        info,
        frozen(
            {
                "status": "finished",
                "steps": 2,
                "test": {"accuracy": 0.75},
                "table": "| a |\n|---|\n| 1 |",
            }
        ),
    )
    strays = set(outside.iterdir()) - before - {run_dir}
    assert not strays, f"the reporter wrote outside the run directory: {sorted(map(str, strays))}"
    return reporter
