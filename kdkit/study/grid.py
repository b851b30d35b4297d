"""The study grid file (``GRID.yaml``): its schema and its expansion into runs.

A grid file is a ``base`` run file plus axes whose product gives the runs::

    name: offline                      # optional, shown in reports
    output_dir: studies/offline        # the study directory (runs/, efficiency.json, report/)
    workers: 2                         # optional: how many runs at once (--workers overrides)
    base: base-run.yaml                # a run file (path relative to this file) or a mapping
    grid:
      task: [exception, {name: defect, max_train: 2000}]
      teacher: [{name: hf-teacher, preset: code-small}]
      student: [{name: gru, size: 1.5M}, {name: transformer, size: 1.5M}]
      method: [ft, kd-study, {name: ckd, training: {batch_size: 16}}]
      seed: [0, 1, 2]
    exclude: [{student: gru-7M, method: ckd}]
    include: [{student: {name: gru, size: 30M}, method: [ft, ckd]}]

An axis value is a component name or a component section (``name`` + the component's options)
with two study-only keys: ``label`` (its name in directory names and tables) and ``training``
(settings merged into the run's ``training``, e.g. CKD's batch 16) — except on the teacher axis,
where ``training`` is the teacher's own option (its fine-tuning schedule). A section whose ``name``
equals the base's section of that kind is merged into it (the axis wins). Tasks may carry the
study-only hint ``train_size`` (training rows, used only by ``--dry-run``'s estimate when the task
has no ``max_train``).

``exclude`` entries drop the runs they match (``axis: label``, a list of labels, or a mapping that
is a subset of the section); ``include`` entries are extra small grids (an axis missing from an
entry takes every value of that axis) added after ``exclude``. Methods that need no teacher (FT)
run once per task/student/seed, whatever the teacher axis says: their teacher is ``none``.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdkit.config import Document, load_document, parse_yaml
from kdkit.errors import ConfigError, KdkitError, Problem

#: The axes of a grid, in the order run ids name them.
AXES = ("task", "teacher", "student", "method", "seed")
#: Keys of an axis value that belong to the study, not to the component.
STUDY_KEYS = ("label", "training", "train_size")
#: The teacher label of runs without a teacher.
NO_TEACHER = "none"
#: Option keys whose value makes a default label more telling than the bare name.
_LABEL_KEYS = ("size", "preset", "model")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")

Origin = tuple[str | None, int | None]  # (file, line)


def safe_label(text: str) -> str:
    """``text`` made safe for a directory name (letters, digits, ``. _ + -``)."""
    return _UNSAFE.sub("_", text).strip("_") or "x"


@dataclass(frozen=True)
class AxisValue:
    """One value of one axis.

    Attributes:
        axis: ``task``, ``teacher``, ``student``, ``method`` or ``seed``.
        label: its name in run ids, tables and figures.
        section: the component section (``{"name": ..., **options}``), ``None`` for "no teacher";
            for the seed axis, ``{"seed": n}``.
        training: settings this value merges into the run's ``training``.
        hints: study-only hints (``train_size``).
        where: the grid-file path this value came from (for error locations).
    """

    axis: str
    label: str
    section: Mapping[str, Any] | None
    training: Mapping[str, Any] = field(default_factory=dict)
    hints: Mapping[str, Any] = field(default_factory=dict)
    where: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        """The component name (``none`` for no teacher; the seed as text for seeds)."""
        if self.axis == "seed":
            return str(self.seed)
        return NO_TEACHER if self.section is None else str(self.section["name"])

    @property
    def seed(self) -> int:
        """The seed of a seed-axis value."""
        assert self.section is not None
        return int(self.section["seed"])

    def options(self) -> dict[str, Any]:
        """The section without ``name``."""
        return {k: v for k, v in (self.section or {}).items() if k != "name"}


@dataclass(frozen=True)
class RunPoint:
    """One run of the study: a value on every axis, and its deterministic directory name."""

    values: Mapping[str, AxisValue]

    @property
    def run_id(self) -> str:
        """``task__teacher__student__method__seedN`` from the axis labels."""
        v = self.values
        return "__".join(
            [
                v["task"].label,
                v["teacher"].label,
                v["student"].label,
                v["method"].label,
                f"seed{v['seed'].seed}",
            ]
        )

    def labels(self) -> dict[str, str]:
        """Axis -> label (the seed as text)."""
        return {
            a: (str(self.values[a].seed) if a == "seed" else self.values[a].label) for a in AXES
        }

    def cell(self) -> tuple[str, str, str, str]:
        """(task, teacher, student, method) labels: the runs of one cell differ only by seed."""
        lab = self.labels()
        return lab["task"], lab["teacher"], lab["student"], lab["method"]


@dataclass
class Grid:
    """A parsed grid file (not yet validated against the installed components)."""

    doc: Document
    name: str
    output_dir: Path
    base: dict[str, Any]
    base_doc: Document
    base_prefix: tuple[Any, ...]
    axes: dict[str, list[AxisValue]]
    exclude: list[dict[str, Any]]
    include: list[dict[str, Any]]
    #: How many runs ``kdkit study`` runs at once on one machine when ``--workers`` is not given.
    workers: int = 1

    @property
    def filename(self) -> str | None:
        """The grid file's path."""
        return self.doc.filename


#: The fix every grid problem report ends with.
GRID_FIX = (
    "edit the grid file (or its base run file) as suggested; `kdkit config schema` "
    "lists every option of every component"
)


def grid_error(problems: list[Problem], filename: str | None) -> ConfigError:
    """The :class:`~kdkit.errors.ConfigError` for problems of a grid file (or of the runs it
    expands to); each problem names its own file (the grid, or its base run file)."""
    return ConfigError(problems, filename, subject=filename or "the grid", fix=GRID_FIX)


_TOP_KEYS = ("name", "output_dir", "workers", "base", "grid", "exclude", "include")


def load_grid(path: str | Path, output_dir: str | Path | None = None) -> Grid:
    """Read and check the shape of a grid file (axes, labels, base); see the module docstring.

    Raises:
        ConfigError: every shape problem, with file:line (:func:`grid_error`).
    """
    doc = load_document(path)
    return parse_grid(doc, output_dir)


def parse_grid(doc: Document, output_dir: str | Path | None = None) -> Grid:
    """Check the shape of a parsed grid document and build its axes."""
    problems: list[Problem] = []
    data = doc.data

    def bad(where: tuple[Any, ...], message: str, suggestion: str | None = None) -> None:
        path = ".".join(map(str, where))
        problems.append(Problem(path, message, doc.line(where), suggestion, doc.filename))

    for key in data:
        if key not in _TOP_KEYS:
            bad((key,), "unknown grid setting", f"a grid file has: {', '.join(_TOP_KEYS)}")
    name = str(data.get("name") or Path(doc.filename or "study").stem)
    out = output_dir or data.get("output_dir") or f"studies/{safe_label(name)}"
    workers = data.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        bad(
            ("workers",),
            f"workers must be a whole number >= 1, not {workers!r}",
            "e.g. workers: 2 (one run per CPU core, with training.num_threads: 1)",
        )
        workers = 1

    base, base_doc, prefix = _load_base(doc, bad)
    grid = data.get("grid")
    axes: dict[str, list[AxisValue]] = {}
    if not isinstance(grid, dict):
        bad(
            ("grid",),
            "the grid must be a mapping of axes",
            f"give some of: {', '.join(AXES)}, each a list",
        )
        grid = {}
    for key in grid:
        if key not in AXES:
            bad(("grid", key), "unknown axis", f"axes are: {', '.join(AXES)}")
    for axis in AXES:
        raw = grid.get(axis)
        if raw is None:
            axes[axis] = [_from_base(axis, base)]
            continue
        if not isinstance(raw, list) or not raw:
            bad(("grid", axis), "an axis must be a non-empty list", f"e.g. {axis}: [...]")
            axes[axis] = [_from_base(axis, base)]
            continue
        values = [_axis_value(axis, item, ("grid", axis, i), bad) for i, item in enumerate(raw)]
        axes[axis] = [v for v in values if v is not None]
        _check_labels(axes[axis], bad)
    exclude = _entries(data, "exclude", bad)
    include = _entries(data, "include", bad)
    for i, entry in enumerate(include):
        for axis, raw in entry.items():
            items = raw if isinstance(raw, list) else [raw]
            for j, item in enumerate(items):
                where = ("include", i, axis) + ((j,) if isinstance(raw, list) else ())
                _axis_value(axis, item, where, bad)
    if problems:
        raise grid_error(problems, doc.filename)
    return Grid(doc, name, Path(out), base, base_doc, prefix, axes, exclude, include, workers)


def _load_base(doc: Document, bad: Callable[..., None]) -> tuple[dict, Document, tuple]:
    """The base run file: inline (prefix ``("base",)``) or read from a path beside the grid."""
    raw = doc.data.get("base", {})
    if isinstance(raw, str):
        anchor = Path(doc.filename).parent if doc.filename else Path.cwd()
        target = Path(raw) if Path(raw).is_absolute() else anchor / raw
        if not target.is_file():
            bad(
                ("base",),
                f"base run file not found: {target}",
                "give a path relative to the grid file, or an inline mapping",
            )
            return {}, parse_yaml("{}", None), ()
        base_doc = load_document(target)
        return copy.deepcopy(base_doc.data), base_doc, ()
    if not isinstance(raw, dict):
        bad(("base",), "base must be a run file path or a mapping of run settings")
        return {}, doc, ("base",)
    return copy.deepcopy(raw), doc, ("base",)


def _from_base(axis: str, base: Mapping[str, Any]) -> AxisValue:
    """The single value of an axis the grid does not list: the base's own setting."""
    if axis == "seed":
        return AxisValue("seed", "", {"seed": int(base.get("seed", 0))}, where=("base", "seed"))
    raw = base.get(axis)
    if raw is None:
        return AxisValue(axis, NO_TEACHER, None, where=("base",))
    section = {"name": raw} if isinstance(raw, str) else dict(raw)
    return AxisValue(axis, _default_label(section), section, where=("base", axis))


def _default_label(section: Mapping[str, Any]) -> str:
    """``name`` plus the value of its first telling option (size, preset, model)."""
    name = str(section.get("name", "?"))
    for key in _LABEL_KEYS:
        if section.get(key) not in (None, ""):
            value = Path(str(section[key])).name if key == "model" else str(section[key])
            return safe_label(f"{name}-{value}")
    return safe_label(name)


def _axis_value(
    axis: str, item: Any, where: tuple[Any, ...], bad: Callable[..., None]
) -> AxisValue | None:
    """One axis item (name, section, ``null`` teacher, or seed) as an :class:`AxisValue`."""
    if axis == "seed":
        if isinstance(item, bool) or not isinstance(item, int):
            bad(where, f"a seed must be an integer (got {item!r})")
            return None
        return AxisValue("seed", "", {"seed": item}, where=where)
    if axis == "teacher" and item in (None, NO_TEACHER):
        return AxisValue(axis, NO_TEACHER, None, where=where)
    if isinstance(item, str):
        return AxisValue(axis, safe_label(item), {"name": item}, where=where)
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        bad(
            where,
            f"a {axis} must be a name or a mapping with 'name' and options",
            "e.g. {name: ..., label: ...}",
        )
        return None
    # On the teacher axis ``training`` is the teacher's own option (the fine-tuning schedule of
    # code-teacher and minilm), never the study key: a teacher value cannot change the run's
    # training (an include with a method value can).
    study_keys = (
        STUDY_KEYS if axis != "teacher" else tuple(k for k in STUDY_KEYS if k != "training")
    )
    training = item.get("training", {}) if axis != "teacher" else {}
    if not isinstance(training, dict):
        bad((*where, "training"), "'training' must be a mapping of training settings")
        training = {}
    hints = {k: item[k] for k in ("train_size",) if k in item}
    if "train_size" in hints and (
        not isinstance(hints["train_size"], int) or hints["train_size"] < 1
    ):
        bad((*where, "train_size"), "train_size must be a positive integer (training rows)")
    section = {k: v for k, v in item.items() if k not in study_keys}
    label = item.get("label")
    if label is not None and (not isinstance(label, str) or safe_label(label) != label):
        bad(
            (*where, "label"),
            f"a label must be letters, digits, '.', '_', '+' or '-' (got {label!r})",
        )
        label = None
    return AxisValue(axis, label or _default_label(section), section, training, hints, where)


def _check_labels(values: Sequence[AxisValue], bad: Callable[..., None]) -> None:
    """Two different values of an axis may not share a label (their run ids would collide)."""
    seen: dict[str, AxisValue] = {}
    for v in values:
        key = str(v.seed) if v.axis == "seed" else v.label
        if key in seen and (seen[key].section != v.section or seen[key].training != v.training):
            bad(
                v.where,
                f"two {v.axis} values are both labelled '{key}'",
                "give each a distinct 'label:'",
            )
        elif key in seen:
            bad(v.where, f"{v.axis} '{key}' is listed twice", "remove the duplicate")
        seen[key] = v


def _entries(data: Mapping[str, Any], key: str, bad: Callable[..., None]) -> list[dict[str, Any]]:
    raw = data.get(key) or []
    if not isinstance(raw, list):
        bad((key,), f"'{key}' must be a list of mappings axis: value")
        return []
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            bad((key, i), f"each '{key}' entry must be a mapping axis: value(s)")
            continue
        unknown = [a for a in entry if a not in AXES]
        if unknown:
            bad((key, i, unknown[0]), "unknown axis", f"axes are: {', '.join(AXES)}")
            continue
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- expansion


def matches(value: AxisValue, pattern: Any) -> bool:
    """Whether an ``exclude`` pattern matches an axis value.

    A pattern is a label or component name, an integer (seeds), a list of patterns (any), or a
    mapping that is a subset of the value's section.
    """
    if isinstance(pattern, list):
        return any(matches(value, p) for p in pattern)
    if value.axis == "seed":
        return not isinstance(pattern, bool) and pattern == value.seed
    if pattern is None:
        return value.section is None
    if isinstance(pattern, str):
        return pattern in (value.label, value.name)
    if isinstance(pattern, dict):
        section = value.section or {}
        return all(
            k in section and section[k] == v for k, v in pattern.items() if k != "label"
        ) and ("label" not in pattern or pattern["label"] == value.label)
    return False


def expand(
    grid: Grid, needs_teacher: Callable[[AxisValue], bool] = lambda _v: True
) -> list[RunPoint]:
    """All runs of the grid, sorted by run id.

    ``needs_teacher(method_value)`` says whether a method uses a teacher; runs of methods that do
    not get the teacher ``none`` and are deduplicated (FT runs once, not once per teacher).

    Raises:
        ConfigError: two runs with the same id but different settings.
    """
    points: dict[str, RunPoint] = {}
    no_teacher = AxisValue("teacher", NO_TEACHER, None, where=("grid", "teacher"))

    def add(combo: Sequence[AxisValue]) -> None:
        values = dict(zip(AXES, combo))
        if values["teacher"].section is not None and not needs_teacher(values["method"]):
            values["teacher"] = no_teacher
        point = RunPoint(values)
        old = points.get(point.run_id)
        if old is not None and _content(old) != _content(point):
            raise grid_error(
                [
                    Problem(
                        ".".join(map(str, point.values["method"].where)),
                        f"two different runs would both be called '{point.run_id}'",
                        grid.doc.line(point.values["method"].where),
                        "give the values distinct labels",
                        grid.filename,
                    )
                ],
                grid.filename,
            )
        points[point.run_id] = point

    for combo in itertools.product(*(grid.axes[a] for a in AXES)):
        if any(
            all(matches(v, entry[a]) for a, v in zip(AXES, combo) if a in entry)
            for entry in grid.exclude
        ):
            continue
        add(combo)
    for i, entry in enumerate(grid.include):
        lists = []
        for axis in AXES:
            if axis not in entry:
                lists.append(grid.axes[axis])
                continue
            raw = entry[axis]
            items = raw if isinstance(raw, list) else [raw]
            vals = []
            for j, item in enumerate(items):
                where = ("include", i, axis) + ((j,) if isinstance(raw, list) else ())
                # an include may name an existing axis value by its label
                known = [v for v in grid.axes[axis] if isinstance(item, str) and item == v.label]
                value = known[0] if known else _axis_value(axis, item, where, _raise_bad)
                assert value is not None  # _raise_bad raised on a bad item
                vals.append(value)
            lists.append(vals)
        for combo in itertools.product(*lists):
            add(combo)
    return [points[k] for k in sorted(points)]


def _raise_bad(where: tuple[Any, ...], message: str, suggestion: str | None = None) -> None:
    raise KdkitError(message, where=".".join(map(str, where)), fix=suggestion)  # checked before


def _content(point: RunPoint) -> list[Any]:
    return [(v.section, dict(v.training)) for v in point.values.values()]


def execution_order(points: Sequence[RunPoint], grid: Grid) -> list[RunPoint]:
    """Seed-major order: every cell's first seed before any second seed.

    An interrupted study then has complete single-seed tables early; within a seed, runs follow
    the grid's order of tasks, students, methods and teachers (FT, listed first, runs first).
    """
    seed_rank = {v.seed: i for i, v in enumerate(grid.axes["seed"])}
    rank = {a: {v.label: i for i, v in enumerate(grid.axes[a])} for a in AXES if a != "seed"}

    def key(p: RunPoint) -> tuple:
        lab = p.labels()
        return (
            seed_rank.get(p.values["seed"].seed, len(seed_rank)),
            p.values["seed"].seed,
            *(rank[a].get(lab[a], -1) for a in ("task", "student", "method", "teacher")),
            p.run_id,
        )

    return sorted(points, key=key)
