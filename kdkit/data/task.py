"""A base class for tasks read from files in a public format: :class:`CodeTask`.

kdkit's own tasks derive from it, and so may a third party's. A task finds its data in one of
these places, in this order:

0. an in-memory ``datasets.Dataset``/``DatasetDict`` given in Python (:meth:`CodeTask.use_dataset`,
   :func:`use_dataset` for any task, or ``BuildContext.extra["dataset"]`` when the task is built);
1. ``data_files`` — JSONL/CSV/Parquet files per split, read by ``datasets.load_dataset``;
   ``data_dir`` — a folder written by ``DatasetDict.save_to_disk`` (it holds
   ``dataset_dict.json``), or else a folder in the task's public format (its
   :meth:`CodeTask.read_local`);
2. ``hub`` — a hub dataset id (needs a network);
3. ``source`` — the offline builder's sources (default ``["stdlib"]``): the task's
   :attr:`~CodeTask.build_offline` writes the dataset once into ``<cache>/built/<task>-<key>/``
   and every later run reuses it. A task without a builder needs ``data_dir`` or ``hub``.

The rows become a ``datasets.DatasetDict`` saved as Arrow under ``<cache>/datasets/<task>-<fp>``,
where ``fp`` (:meth:`CodeTask.fingerprint`) hashes the data's content (files' bytes, a saved
dataset's Arrow files, an in-memory dataset's Arrow tables), the ``columns`` mapping and every
option that changes the rows, so a second load is a memory-mapped read.

``datasets`` inputs (``data_files``, a ``save_to_disk`` folder, an in-memory dataset, ``hub``)
carry the task's *public field names* as columns (``func``/``target`` for ``defect`` ...); the
``columns`` option renames a user's own columns to them (``{code: func, y: target}``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from kdkit.api import BuildContext, Options
from kdkit.data.build import STATS_FILE, BuildReport, validate_options
from kdkit.data.fingerprint import FORMAT_VERSION, hash_files, hash_json
from kdkit.data.formats import (
    SPLITS,
    Rows,
    load_data_files,
    rows_from_datasets,
    warn_duplicates,
)
from kdkit.data.paths import cache_root
from kdkit.data.sources import resolve_sources
from kdkit.errors import KdkitError
from kdkit.integrity import verify, write_manifest


class CodeTaskOptions(Options):
    """Options every :class:`CodeTask` accepts (a task's options model derives from it)."""

    data_dir: str | None = Field(None, description="folder with the data in the public format")
    train_file: str | None = Field(
        None, description="train split file (default: found in data_dir)"
    )
    validation_file: str | None = Field(None, description="validation split file")
    test_file: str | None = Field(None, description="test split file")
    data_files: dict[Literal["train", "validation", "test"], str | list[str]] | None = Field(
        None,
        description="JSONL/CSV/Parquet file(s) of each split, read by datasets.load_dataset "
        "(relative paths: inside data_dir when set)",
    )
    data_format: Literal["json", "csv", "parquet"] | None = Field(
        None, description="format of data_files (default: from their suffix)"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="rename the columns of a datasets input (data_files, a save_to_disk "
        "data_dir, hub, an in-memory dataset) to the task's public field names: "
        "{your_name: task_field}",
    )
    hub: str | None = Field(None, description="hub dataset id (needs a network); used only if set")
    hub_config: str | None = Field(None, description="configuration name of the hub dataset")
    source: list[str] = Field(
        default_factory=lambda: ["stdlib"],
        description="offline builder sources (stdlib, site-packages, directories); used when "
        "neither data_dir nor hub is given",
    )
    max_train: int | None = Field(None, ge=1, description="seeded subsample of the train split")
    max_eval: int | None = Field(None, ge=1, description="seeded cap of validation and test")
    sample_seed: int = Field(0, description="seed of every subsample (independent of the run seed)")
    build_seed: int = Field(0, description="seed of the offline builder's split")


def offline_option(model: type[Options], name: str, *, if_set: bool = False) -> Any:
    """A task option that passes on to field ``name`` of the builder's options ``model``, whose
    declaration it reuses: description (prefixed "offline build only"), constraints and default.

    Use it as the default of a field of the task's options, typed like the builder's field
    (``X | None`` with ``if_set``)::

        kinds: list[str] = offline_option(DefectBuildOptions, "kinds")
        max_lines: int | None = offline_option(DefectBuildOptions, "max_lines", if_set=True)

    The value reaches the builder through :meth:`CodeTask.offline_overrides` and is part of the
    built data's cache key: always, or with ``if_set`` only when given (default ``None``: the
    builder's own default applies, and adding such an option keeps older cache keys valid).
    """
    source = model.model_fields[name]
    description = f"offline build only: {source.description}"
    extra: dict[str, Any] = {"offline": "if_set" if if_set else "always"}
    info: Any  # a FieldInfo (pydantic types Field() as its default's type)
    if if_set:
        default = source.get_default(call_default_factory=True)
        info = Field(
            None, description=f"{description} (default {default})", json_schema_extra=extra
        )
    elif source.default_factory is not None:
        info = Field(
            default_factory=source.default_factory, description=description, json_schema_extra=extra
        )
    else:
        info = Field(source.default, description=description, json_schema_extra=extra)
    info.metadata = list(source.metadata)  # the builder's constraints (ge, le, ...)
    return info


def _offline_mark(info: Any) -> str | None:
    extra = info.json_schema_extra
    return extra.get("offline") if isinstance(extra, dict) else None


def _dir_signature(path: Path) -> list[Any]:
    """A cheap signature of a source directory: count, total size and newest mtime of its .py."""
    count = size = newest = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                count, size, newest = count + 1, size + st.st_size, max(newest, int(st.st_mtime))
    return [count, size, newest]


def subsample(rows: list[dict[str, Any]], k: int | None, fraction: float, seed: int) -> list:
    """A seeded subsample: ``fraction`` of the rows, then at most ``k``; order is kept."""
    n = len(rows)
    target = n if fraction >= 1 else max(1, round(n * fraction)) if n else 0
    if k is not None:
        target = min(target, k)
    if target >= n:
        return rows
    keep = sorted(random.Random(seed).sample(range(n), target))
    return [rows[i] for i in keep]


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset(Dict).save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _saved_dataset_hash(path: Path) -> str:
    """Content hash of a ``save_to_disk`` folder: every file's relative path and bytes."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hash_json([[str(p.relative_to(path)) for p in files], hash_files(files)])


def _table_hash(dataset: Any) -> str:
    """Content hash of an in-memory ``datasets.Dataset``: its Arrow table as an IPC stream (rows
    after any ``select``/``filter``, so two datasets with the same rows hash alike)."""
    import hashlib

    import pyarrow as pa

    table = dataset.with_format("arrow")[:]  # materialises the indices mapping, if any
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def _as_splits(dataset: Any, seed: int, origin: str) -> dict[str, Any]:
    """A ``DatasetDict`` (or mapping of splits) as is; a single ``Dataset`` split seeded 80/10/10
    into train/validation/test (``seed``: the task's ``build_seed``)."""
    import datasets

    if isinstance(dataset, Mapping):
        return dict(dataset)
    if not isinstance(dataset, datasets.Dataset):
        raise KdkitError(
            f"{origin} is a {type(dataset).__name__}, not a datasets.Dataset or DatasetDict",
            where="task dataset",
            fix="pass a datasets.Dataset, a DatasetDict or {split: Dataset}",
        )
    if len(dataset) < 10:
        raise KdkitError(
            f"{origin} has {len(dataset)} rows: too few to split 80/10/10",
            where="task dataset",
            fix="give a DatasetDict with train/validation/test splits",
        )
    first = dataset.train_test_split(test_size=0.2, seed=seed)
    rest = first["test"].train_test_split(test_size=0.5, seed=seed)
    return {"train": first["train"], "validation": rest["train"], "test": rest["test"]}


def use_dataset(task: Any, dataset: Any) -> Any:
    """Make ``task`` read its rows from an in-memory ``datasets.Dataset``/``DatasetDict`` (or a
    ``{split: Dataset}`` mapping) instead of its options' files; returns the task. The task must
    support it (every :class:`CodeTask` does); the Python API's entry point."""
    attach = getattr(task, "use_dataset", None)
    if attach is None:
        raise KdkitError(
            f"the task {getattr(task, 'name', task)!r} cannot read an in-memory dataset",
            where="task",
            fix="use a task derived from kdkit.data.task.CodeTask, or save the "
            "data to files and set data_files/data_dir",
        )
    return attach(dataset)


class CodeTask:
    """Base class of tasks read from public-format files; subclasses set the class attributes
    (``name``, ``headline_metric``, ``format_name``, ``reader``, ``metrics``, ``hub_row``...) and
    :meth:`default_labels`, and override :meth:`finish_rows` / :meth:`load_options` where the
    task maps labels or has options that change rows.

    A task that can build its data offline sets :attr:`builder_options` (a model derived from
    :class:`kdkit.data.build.SourceBuildOptions`) and :attr:`build_offline` (the builder,
    ``build(out_dir, options, *, quiet=False) -> BuildReport``, as a ``staticmethod``); they are
    the optional offline part of the :class:`kdkit.api.Task` contract, read by
    ``kdkit data build TASK`` and by the default ``source`` path. :meth:`offline_overrides` says
    which builder options the task's own options set.
    """

    name: ClassVar[str]
    is_pair: ClassVar[bool] = False
    headline_metric: ClassVar[str]
    #: Name of the public format (for error messages).
    format_name: ClassVar[str]
    #: The options model of the offline builder; ``None``: the task cannot build offline.
    builder_options: ClassVar[type[Options] | None] = None
    #: The offline builder, ``(out_dir, options, *, quiet=False) -> BuildReport``; ``None``: none.
    build_offline: ClassVar[Callable[..., BuildReport] | None] = None
    #: Bump when the builder writes other rows from the same inputs and options (a fix), so a
    #: build cached by the older builder is not reused; part of the build's cache key.
    build_version: ClassVar[int] = 1
    #: The public-format reader, ``(data_dir, explicit, build_hint) -> (rows, files read)``, as a
    #: ``staticmethod``; the default :meth:`read_local` calls it.
    reader: ClassVar[Callable[..., tuple[Rows, list[Path]]] | None] = None
    #: One hub row -> ``{text, label[, text_pair]}`` (a ``staticmethod``), for :meth:`convert_hub_row`.
    hub_row: ClassVar[Callable[[dict[str, Any], str], dict[str, Any]] | None] = None
    #: ``(logits, labels) -> metrics`` (a ``staticmethod``, e.g.
    #: :func:`kdkit.data.metrics.binary_metrics`), for :meth:`evaluate`.
    metrics: ClassVar[Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None] = None

    def __init__(self, options: CodeTaskOptions, context: BuildContext | None = None) -> None:
        self.options = options
        self.context = context or BuildContext()
        self.cache = cache_root(self.context.cache_dir)
        self.labels: list[str] = list(self.default_labels())
        self._splits = None
        self._fingerprint: str | None = None
        self._dataset: Any = None  # an in-memory dataset (use_dataset)
        if self.context.extra.get("dataset") is not None:  # the Python API's way in
            self.use_dataset(self.context.extra["dataset"])
        #: Counts of rows dropped while loading (e.g. labels outside the label set).
        self.dropped: dict[str, int] = {}

    # -- to override --------------------------------------------------------------------------

    def default_labels(self) -> Sequence[str]:
        """Label names before the data is seen."""
        raise NotImplementedError

    def read_local(
        self, data_dir: Path, explicit: dict[str, str | None]
    ) -> tuple[Rows, list[Path]]:
        """Rows of each split from a folder in the public format, and the files read."""
        if self.reader is None:
            raise NotImplementedError(f"{type(self).__name__} sets no reader")
        return self.reader(data_dir, explicit, self.build_hint)

    def convert_hub_row(self, obj: dict[str, Any], where: str) -> dict[str, Any]:
        """One hub row -> ``{text, label[, text_pair]}``."""
        hub_row = type(self).hub_row  # a staticmethod: read from the class, mypy binds no self
        if hub_row is None:
            raise NotImplementedError(f"{type(self).__name__} sets no hub_row")
        return hub_row(obj, where)

    def offline_overrides(self) -> dict[str, Any]:
        """Builder options set by the task's options (besides ``sources`` and ``seed``): the
        fields declared with :func:`offline_option` (or marked ``json_schema_extra={"offline":
        "always" | "if_set"}``), the ``if_set`` ones only when not ``None``. They are part of
        the key of the built dataset."""
        out = {}
        for name, info in type(self.options).model_fields.items():
            mark, value = _offline_mark(info), getattr(self.options, name)
            if mark == "always" or (mark == "if_set" and value is not None):
                out[name] = value
        return out

    def finish_rows(self, rows: Rows) -> Rows:
        """Map raw labels to ids, filter, subsample (rows of all splits at once)."""
        return {
            "train": subsample(
                rows["train"], self.options.max_train, 1.0, self.options.sample_seed
            ),
            "validation": subsample(
                rows["validation"], self.options.max_eval, 1.0, self.options.sample_seed
            ),
            "test": subsample(rows["test"], self.options.max_eval, 1.0, self.options.sample_seed),
        }

    def load_options(self) -> dict[str, Any]:
        """Options that change the rows (part of the fingerprint)."""
        o = self.options
        return {"max_train": o.max_train, "max_eval": o.max_eval, "sample_seed": o.sample_seed}

    # -- the Task contract ----------------------------------------------------------------------

    @property
    def build_hint(self) -> str:
        """The command that builds an offline dataset for this task (or what to do without one)."""
        if self.builder_options is None:
            return f"get the data of the {self.name} task in its public format ({self.format_name})"
        return f"build one offline with `kdkit data build {self.name} --from stdlib --out DIR`"

    def offline_build_options(self) -> Options:
        """The builder's options for this task's ``source``, ``build_seed`` and overrides."""
        if self.builder_options is None or self.build_offline is None:
            raise KdkitError(
                f"the {self.name} task has no offline builder, and neither data_dir nor hub is set",
                where="task.source",
                fix=f"set task.data_dir to a folder in its public format ({self.format_name}), "
                "or task.hub",
            )
        values = {
            "sources": list(self.options.source),
            "seed": self.options.build_seed,
            **self.offline_overrides(),
        }
        return validate_options(self.builder_options, values, where="task options")

    def built_dir(self) -> Path:
        """Where the offline build for ``source`` lives in the cache (built on first use)."""
        roots = resolve_sources(self.options.source)
        sig = [
            [r.label, str(r.path)]
            + (_dir_signature(r.path) if r.label not in ("stdlib", "site-packages") else [])
            for r in roots
        ]
        key = hash_json(
            {
                "task": self.name,
                "sources": sig,
                "python": sys.version,
                "seed": self.options.build_seed,
                "opts": self.offline_overrides(),
                "format": FORMAT_VERSION,
                # Only when bumped, so builds cached before this field existed keep their key.
                **({"builder": self.build_version} if self.build_version != 1 else {}),
            }
        )
        return self.cache / "built" / f"{self.name}-{key}"

    def build_stats(self) -> dict[str, Any] | None:
        """The ``stats.json`` of the kdkit offline build the data come from (the cache's build,
        or a ``data_dir`` written by ``kdkit data build``); ``None`` for public, hub, file or
        in-memory data. Read after :meth:`load`."""
        o = self.options
        if (
            self._dataset is not None
            or o.data_files
            or o.hub
            or any((o.train_file, o.validation_file, o.test_file))
        ):
            return None
        folder = Path(o.data_dir).expanduser() if o.data_dir else self.built_dir()
        path = folder / STATS_FILE
        if not path.is_file():
            return None
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return stats if isinstance(stats, dict) else None

    def _ensure_built(self) -> Path:
        """The built dataset's folder in the cache, built through :attr:`build_offline` once."""
        options = self.offline_build_options()  # no builder: a clear error before any I/O
        target = self.built_dir()
        if (target / STATS_FILE).is_file():
            verify(target, artefact=f"cache entry built/{target.name}", fix=_clear_fix(target))
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            assert self.build_offline is not None  # checked by offline_build_options
            print(
                f"kdkit: building the offline {self.name} dataset from "
                f"{', '.join(self.options.source)} into {target} (once)",
                file=sys.stderr,
            )
            self.build_offline(tmp, options, quiet=True)
            write_manifest(tmp, "built dataset")
            try:
                os.replace(tmp, target)
            except OSError:  # another process built it first
                if not (target / STATS_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def use_dataset(self, dataset: Any) -> CodeTask:
        """Read the rows from ``dataset`` — a ``datasets.DatasetDict`` (splits named
        train/validation/test, or valid/dev, eval), a ``{split: Dataset}`` mapping, or one
        ``Dataset`` (split seeded 80/10/10 with ``build_seed``) — whose columns are the task's
        public field names after the ``columns`` option. It wins over the options' files; the
        fingerprint hashes its Arrow tables. Returns the task (``task.use_dataset(ds).load()``)."""
        self._dataset = dataset
        self._splits = self._fingerprint = None
        return self

    def _from_datasets(self, loaded: Any, origin: str, where: str) -> Rows:
        return rows_from_datasets(
            _as_splits(loaded, self.options.build_seed, origin),
            self.convert_hub_row,
            origin,
            columns=self.options.columns,
            where=where,
        )

    def _data_files(self) -> dict[str, list[Path]]:
        base = Path(self.options.data_dir).expanduser() if self.options.data_dir else Path(".")
        out: dict[str, list[Path]] = {}
        for split, given in (self.options.data_files or {}).items():
            paths = [Path(p).expanduser() for p in ([given] if isinstance(given, str) else given)]
            paths = [p if p.is_absolute() else base / p for p in paths]
            for p in paths:
                if not p.is_file():
                    raise KdkitError(
                        f"{split} data file not found: {p}",
                        where=f"task.data_files.{split}",
                        fix="fix the path (relative paths are inside data_dir when "
                        "it is set, else the working directory)",
                    )
            out[split] = paths
        return out

    def _read(self) -> tuple[Rows, str]:
        import datasets

        o = self.options
        cols = sorted(o.columns.items())
        if self._dataset is not None:
            splits = _as_splits(self._dataset, o.build_seed, "the in-memory dataset")
            rows = self._from_datasets(splits, "the in-memory dataset", "task")
            tables = {k: _table_hash(v) for k, v in splits.items()}
            return rows, "memory:" + hash_json([tables, cols])
        if o.data_files:
            data_files = self._data_files()
            loaded = load_data_files(data_files, o.data_format)
            rows = self._from_datasets(loaded, "task.data_files", "task")
            used = {k: [str(p) for p in v] for k, v in data_files.items()}
            content = hash_files([p for split in SPLITS for p in data_files.get(split, [])])
            return rows, "data_files:" + hash_json([list(used), content, o.data_format, cols])
        explicit = {"train": o.train_file, "validation": o.validation_file, "test": o.test_file}
        if o.data_dir and is_saved_dataset(Path(o.data_dir).expanduser()):
            path = Path(o.data_dir).expanduser()
            rows = self._from_datasets(datasets.load_from_disk(str(path)), str(path), "task")
            return rows, "saved:" + hash_json([_saved_dataset_hash(path), cols])
        if o.data_dir or any(explicit.values()):
            if o.columns:
                raise KdkitError(
                    "columns: renames the columns of a datasets input, and data_dir is a folder "
                    f"in the {self.name} task's public format",
                    where="task.columns",
                    fix="read your own files through data_files (JSONL, CSV or Parquet) with "
                    "columns:, or drop columns:",
                )
            data_dir = Path(o.data_dir or ".").expanduser()
            rows, files = self.read_local(data_dir, explicit)
            return rows, "files:" + hash_files(files)
        if o.hub:
            from kdkit.data.formats import read_hub

            rows, fp = read_hub(o.hub, o.hub_config, self.convert_hub_row, columns=o.columns)
            return rows, "hub:" + hash_json([o.hub, o.hub_config, fp] + ([cols] if cols else []))
        built = self._ensure_built()
        rows, files = self.read_local(built, {})
        return rows, "files:" + hash_files(files)

    def load(self) -> Any:
        """The ``datasets.DatasetDict`` (train/validation/test), from the Arrow cache if present."""
        if self._splits is not None:
            return self._splits
        import datasets

        rows, data_fp = self._read()
        warn_duplicates(rows.get("train", []), f"the {self.name} task's train split")
        rows = self.finish_rows(rows)
        empty = [s for s in SPLITS if not rows[s]]
        if empty:
            raise KdkitError(
                f"the {self.name} task has no rows in split(s) {empty} "
                f"(dropped while loading: {self.dropped or 'none'})",
                where=(
                    "the in-memory dataset"
                    if self._dataset is not None
                    else "task.data_files"
                    if self.options.data_files
                    else self.options.data_dir or self.options.hub or "task.source"
                ),
                fix="check the files and the label set (a label list that no row of a split "
                "uses empties it)",
            )
        self._fingerprint = hash_json(
            {
                "task": self.name,
                "data": data_fp,
                "labels": self.labels,
                "load": self.load_options(),
                "format": FORMAT_VERSION,
            }
        )
        arrow = self.cache / "datasets" / f"{self.name}-{self._fingerprint}"
        if (arrow / "dataset_dict.json").is_file():
            self._splits = load_dataset_cache(arrow)
            return self._splits
        features = {"text": datasets.Value("string"), "label": datasets.Value("int64")}
        if self.is_pair:
            features["text_pair"] = datasets.Value("string")
        schema = datasets.Features(features)
        dd = datasets.DatasetDict(
            {
                s: datasets.Dataset.from_dict(
                    {k: [r[k] for r in rows[s]] for k in features}, features=schema
                )
                for s in SPLITS
            }
        )
        arrow.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{arrow.name}-", dir=arrow.parent))
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a per-split "Saving the dataset" bar is noise here
        try:
            dd.save_to_disk(str(tmp))
            write_manifest(tmp, "dataset cache")
            try:
                os.replace(tmp, arrow)
            except OSError:
                if not (arrow / "dataset_dict.json").is_file():
                    raise
        finally:
            if bars:
                datasets.enable_progress_bars()
            shutil.rmtree(tmp, ignore_errors=True)
        self._splits = load_dataset_cache(arrow)
        return self._splits

    def fingerprint(self) -> str:
        """Hash of the data files' content, the label set and every option that changes rows."""
        if self._fingerprint is None:
            self.load()
        assert self._fingerprint is not None
        return self._fingerprint

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """All metrics of the task (fractions in [0, 1]); includes :attr:`headline_metric`."""
        metrics = type(self).metrics  # a staticmethod: read from the class, mypy binds no self
        if metrics is None:
            raise NotImplementedError(f"{type(self).__name__} sets no metrics")
        return metrics(logits, labels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} labels={len(self.labels)}>"


def _clear_fix(entry: Path) -> str:
    return f"delete the cache entry with `kdkit cache clear {entry.name}`; it is built again on the next run"


def load_dataset_cache(arrow: Path) -> Any:
    """The ``DatasetDict`` of a dataset cache entry (``CACHE/datasets/<task>-<fp>``), checked
    against its manifest first; a damaged entry is a :class:`KdkitError` naming it."""
    import datasets

    fix = _clear_fix(arrow)
    where = f"cache entry datasets/{arrow.name} ({arrow})"
    verify(arrow, artefact=f"cache entry datasets/{arrow.name}", fix=fix)
    try:
        loaded = datasets.load_from_disk(str(arrow))
        missing = [s for s in SPLITS if s not in loaded]
        if missing:
            raise ValueError(f"it has no split(s) {missing}")
        for split in SPLITS:
            len(loaded[split])  # touch every split's table: a truncated .arrow fails here
        return loaded
    except Exception as exc:  # datasets/pyarrow raise many types on damaged files
        raise KdkitError(
            f"the cached dataset cannot be read: {type(exc).__name__}: {str(exc)[:300]}",
            where=where,
            fix=fix,
        ) from None
