"""From grid points to validated run configurations.

Every run of a study is an ordinary run file: the grid's ``base`` with the point's sections and
training settings put in, ``seed`` set and ``output_dir`` pointing into the study directory. Each
is validated by :func:`kdkit.config.validate` — the same check ``kdkit run`` makes — and every
problem of every run is reported at once, located in the grid file (or the base run file) where
the offending value was written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdkit.api import KDMethod
from kdkit.config import (
    COMPONENT_SECTIONS,
    Document,
    ResolvedConfig,
    apply_overrides,
    validate,
)
from kdkit.errors import ConfigError, Problem
from kdkit.registry import Registry
from kdkit.study.grid import AXES, AxisValue, Grid, RunPoint, expand, grid_error

Origin = tuple[str | None, int | None]


@dataclass
class PlannedRun:
    """A run of the study: its grid point, run directory and validated configuration."""

    point: RunPoint
    run_dir: Path
    resolved: ResolvedConfig

    @property
    def run_id(self) -> str:
        """The run's deterministic name (its directory under ``runs/``)."""
        return self.point.run_id


def _deep_merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def run_document(
    grid: Grid, point: RunPoint, overrides: Iterable[str] = ()
) -> tuple[Document, dict[tuple[str, ...], Origin]]:
    """The run file of one point, and where each of its settings was written.

    Returns:
        The document (``filename`` is the grid file) and a map from run-file paths (string parts)
        to ``(file, line)`` in the grid or base file.
    """
    data = copy.deepcopy(grid.base)
    origins: dict[tuple[str, ...], Origin] = {}
    for path, line in grid.base_doc.lines.items():
        if path[: len(grid.base_prefix)] == grid.base_prefix:
            rel = tuple(str(p) for p in path[len(grid.base_prefix) :])
            if rel:
                origins[rel] = (grid.base_doc.filename, line)
    training: dict[str, Any] = dict(data.get("training") or {})
    for axis in AXES:
        value = point.values[axis]
        if axis == "seed":
            data["seed"] = value.seed
            origins[("seed",)] = (grid.filename, grid.doc.line(value.where))
            continue
        _put_section(data, axis, value, origins, grid)
        if value.training:
            _deep_merge(training, value.training)
            for key in value.training:
                where = (*value.where, "training", key)
                origins[("training", str(key))] = (grid.filename, grid.doc.line(where))
    if training:
        data["training"] = training
    data["output_dir"] = str(grid.output_dir / "runs" / point.run_id)
    doc = Document(data, grid.filename, {}, set())
    apply_overrides(doc, overrides)
    return doc, origins


def _put_section(
    data: dict[str, Any],
    axis: str,
    value: AxisValue,
    origins: dict[tuple[str, ...], Origin],
    grid: Grid,
) -> None:
    """Put an axis value's section into the run file (merged when the base names it too)."""
    if value.where and value.where[0] == "base":
        return  # the axis is not in the grid: the base's own section stays as written
    if value.section is None:
        data[axis] = None
        origins[(axis,)] = (grid.filename, grid.doc.line(value.where))
        return
    base = data.get(axis)
    base = {"name": base} if isinstance(base, str) else base
    if isinstance(base, dict) and base.get("name") == value.section["name"]:
        data[axis] = _deep_merge(copy.deepcopy(base), value.section)
    else:
        data[axis] = copy.deepcopy(dict(value.section))
        for key in [k for k in origins if k and k[0] == axis]:
            del origins[key]  # the base's section was replaced: its lines no longer apply
    origins[(axis,)] = (grid.filename, grid.doc.line(value.where))
    for option in value.section:
        origins[(axis, str(option))] = (grid.filename, grid.doc.line((*value.where, option)))


def _locate(problem: Problem, origins: Mapping[tuple[str, ...], Origin], grid: Grid) -> Origin:
    parts = tuple(problem.path.split(".")) if problem.path else ()
    while parts:
        if parts in origins:
            return origins[parts]
        parts = parts[:-1]
    return grid.filename, None


def method_needs_teacher(registry: Registry) -> Callable[[AxisValue], bool]:
    """A ``needs_teacher(method_value)`` answer from each method's declared requirements.

    Nothing is built: a method registered as a :class:`~kdkit.api.KDMethod` subclass answers
    through its :meth:`~kdkit.api.KDMethod.needs_teacher` classmethod (the class-level
    ``requirements``, or the method's own rule over its options). A method that cannot be asked
    — an unknown name, options that do not validate (both reported by the run's validation), a
    factory that is a plain function — counts as needing a teacher: the safe side, which keeps
    the teacher axis as written.
    """
    memo: dict[str, bool] = {}

    def answer(value: AxisValue) -> bool:
        key = repr(sorted((value.section or {}).items(), key=str))
        if key not in memo:
            memo[key] = True
            if value.name in registry.names("kd_method"):
                comp = registry.get("kd_method", value.name)
                factory = comp.factory
                if isinstance(factory, type) and issubclass(factory, KDMethod):
                    try:
                        memo[key] = factory.needs_teacher(comp.options(value.options()))
                    except ValidationError:
                        pass  # the run's validation reports the options
        return memo[key]

    return answer


def plan(grid: Grid, registry: Registry, overrides: Iterable[str] = ()) -> list[PlannedRun]:
    """Expand the grid and validate every run; all problems of all runs are raised together.

    Raises:
        ConfigError: problems located in the grid/base file, each with the runs it affects.
    """
    needs_teacher = method_needs_teacher(registry)
    points = expand(grid, needs_teacher)
    runs: list[PlannedRun] = []
    found: dict[tuple[str | None, int | None, str, str], list[str]] = {}
    for point in points:
        doc, origins = run_document(grid, point, overrides)
        try:
            resolved = validate(doc, registry)
        except ConfigError as exc:
            for p in exc.problems:
                file, line = _locate(p, origins, grid)
                found.setdefault(
                    (file, line, p.path, p.message + "\x00" + (p.suggestion or "")), []
                ).append(point.run_id)
            continue
        _check_teacher(point, resolved, needs_teacher, found, grid)
        runs.append(PlannedRun(point, Path(doc.data["output_dir"]), resolved))
    if found:
        problems = []
        for (file, line, path, msg), ids in found.items():
            message, suggestion = msg.split("\x00")
            more = f" [{len(ids)} runs, e.g. {ids[0]}]" if len(ids) > 1 else f" [run {ids[0]}]"
            problems.append(Problem(path, message + more, line, suggestion or None, file))
        problems.sort(key=lambda p: (str(p.file), p.line or 0, p.path))
        raise grid_error(problems, grid.filename)
    return runs


def _check_teacher(
    point: RunPoint,
    resolved: ResolvedConfig,
    needs_teacher: Callable[[AxisValue], bool],
    found: dict,
    grid: Grid,
) -> None:
    """A run whose method needs a teacher must have one."""
    method = point.values["method"]
    if "teacher" not in resolved.components and needs_teacher(method):
        key = (
            grid.filename,
            grid.doc.line(method.where),
            "teacher",
            f"method '{method.label}' needs a teacher but the run has none\x00add a "
            "teacher to the grid's teacher axis or to the base run file",
        )
        found.setdefault(key, []).append(point.run_id)


def cells(runs: Sequence[PlannedRun]) -> dict[tuple[str, str, str, str], list[PlannedRun]]:
    """Runs grouped by (task, teacher, student, method): the seeds of one table cell."""
    out: dict[tuple[str, str, str, str], list[PlannedRun]] = {}
    for run in runs:
        out.setdefault(run.point.cell(), []).append(run)
    return out


def component_names(resolved: ResolvedConfig) -> dict[str, str]:
    """Section -> component name of a resolved run."""
    return {s: r.component.name for s, r in resolved.components.items() if s in COMPONENT_SECTIONS}
