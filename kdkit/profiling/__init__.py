"""Profiling a real distillation step (``kdkit profile``; docs/profiling.md).

* :mod:`kdkit.profiling.regions` — the named ranges the engine always carries around each part of
  a training step (:func:`~kdkit.profiling.regions.region`); free when nothing profiles.
* :mod:`kdkit.profiling.driver` — builds a run as ``kdkit run`` does and profiles its steps.
* :mod:`kdkit.profiling.report` — the printed tables, the JSON summary and the plot.

Importing this package imports only :mod:`~kdkit.profiling.regions` (the engine imports it on
every run); the driver and the report load on use.
"""

from __future__ import annotations

from kdkit.profiling.regions import REGIONS, region

__all__ = ["REGIONS", "region"]
