"""Generic readers of public dataset files: JSON lines read safely, split files found by name,
fields looked up with a clear error, hub datasets mapped row by row.

A task's reader (its public format) is built from these and returns ``{split: [row, ...]}`` with
kdkit's columns (``text``, ``label`` as the raw label, ``text_pair`` for pairs) for the splits
``train``, ``validation`` and ``test``, plus the files it read (for the fingerprint); the task maps
labels to ids and hands the rows to ``datasets``.

Split files are found by stem: ``train*`` for training, ``valid*``/``validation*``/``dev*`` for
validation, ``test*``/``eval*`` for test, with the reader's suffixes (``.jsonl``, ``.jsontxt``,
``.json`` for JSON lines); sharded files (``train.jsontxt-00000-of-00004``, ...) are joined in order.

Nothing is coerced: a line that is not UTF-8 or not JSON, a code field that is not a string (an
int, a dict), a label of the wrong kind are errors naming ``file:line`` (:func:`text_field`,
:func:`label_field`); quoted values are cut (:func:`kdkit.errors.shorten`).
:func:`warn_duplicates` counts training rows that repeat an earlier one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdkit.errors import KdkitError, shorten

SPLITS = ("train", "validation", "test")
#: File stems accepted for each split, in preference order.
SPLIT_STEMS = {
    "train": ("train",),
    "validation": ("valid", "validation", "dev"),
    "test": ("test", "eval"),
}
JSON_SUFFIXES = (".jsonl", ".jsontxt", ".json")

Rows = dict[str, list[dict[str, Any]]]


def iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 file; a byte that is not UTF-8 or an
    unreadable file is a :class:`KdkitError` naming the file (and line)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise KdkitError(
            f"cannot read {path}: {exc.strerror}",
            where=str(path),
            fix="check the path and its permissions",
        ) from exc
    with handle:
        for n, raw in enumerate(handle, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise KdkitError(
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",
                    where=f"{path}:{n}",
                    fix="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or remove the line",
                ) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-empty line; a bad line is a :class:`KdkitError`."""
    for n, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KdkitError(
                f"not valid JSON: {exc.msg} (column {exc.colno})",
                where=f"{path}:{n}",
                fix="each line must be one JSON object (JSON Lines)",
            ) from None
        except (RecursionError, ValueError) as exc:  # 100,000 nested [ ; a 5,000-digit number
            raise KdkitError(
                f"cannot read the JSON: {shorten(str(exc) or type(exc).__name__)}",
                where=f"{path}:{n}",
                fix="each line must be one flat JSON object (JSON Lines)",
            ) from None
        else:
            if not isinstance(obj, dict):
                raise KdkitError(
                    f"a JSON line is not an object (a {type(obj).__name__})",
                    where=f"{path}:{n}",
                    fix="each line must be one JSON object (JSON Lines)",
                )
            yield n, obj


def field(obj: Mapping[str, Any], names: tuple[str, ...], where: str) -> Any:
    """The first of ``names`` present in ``obj``; missing -> :class:`KdkitError`."""
    for name in names:
        if name in obj:
            return obj[name]
    raise KdkitError(
        f"missing field {' or '.join(map(repr, names))} (has: {shorten(sorted(map(str, obj)))})",
        where=where,
        fix="check that the file is in the expected public format",
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def text_field(obj: Mapping[str, Any], names: tuple[str, ...], where: str) -> str:
    """The first of ``names`` in ``obj``, which must be a string (code, a label name); an int, a
    dict or ``null`` is a :class:`KdkitError`, never turned into text."""
    value = field(obj, names, where)
    if not isinstance(value, str):
        name = next(n for n in names if n in obj)
        raise KdkitError(
            f"field {name!r} must be a string, not {_kind(value)} ({shorten(value)!r})",
            where=where,
            fix="check that the file is in the expected public format",
        )
    return value


def id_field(obj: Mapping[str, Any], names: tuple[str, ...], where: str) -> str:
    """An id field (a string or an integer) as text; anything else is a :class:`KdkitError`."""
    value = field(obj, names, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        name = next(n for n in names if n in obj)
        raise KdkitError(
            f"field {name!r} must be a string or an integer id, not {_kind(value)} "
            f"({shorten(value)!r})",
            where=where,
            fix="check that the file is in the expected public format",
        )
    return str(value)


def warn_duplicates(rows: Sequence[Mapping[str, Any]], where: str) -> int:
    """Count rows that repeat an earlier row (same text, pair and label) and warn on stderr;
    returns the count. Repeats are kept (a dataset may mean them) but inflate and bias training;
    the same text with *different* labels is counted and said apart."""
    seen: dict[tuple[Any, Any], Any] = {}
    repeats = conflicts = 0
    for row in rows:
        key = (row.get("text"), row.get("text_pair"))
        if key in seen:
            repeats += 1
            conflicts += seen[key] != row.get("label")
        else:
            seen[key] = row.get("label")
    if repeats:
        detail = f", {conflicts:,} of them with another label" if conflicts else ""
        print(
            f"kdkit: warning: {repeats:,} of {len(rows):,} training rows repeat an earlier row"
            f"{detail} ({where}); deduplicate the data if that is not meant",
            file=sys.stderr,
        )
    return repeats


def find_split_files(
    data_dir: Path, split: str, suffixes: tuple[str, ...], explicit: str | None, build_hint: str
) -> list[Path]:
    """The file(s) of ``split`` in ``data_dir`` (``explicit`` wins; sharded files are joined)."""
    if explicit:
        path = Path(explicit).expanduser()
        path = path if path.is_absolute() else data_dir / path
        if not path.is_file():
            raise KdkitError(
                f"{split} file not found: {path}",
                where=str(path),
                fix="fix the path of the split file in the task options",
            )
        return [path]
    if not data_dir.is_dir():
        raise KdkitError(
            f"data folder not found: {data_dir}",
            where=str(data_dir),
            fix=f"point data_dir at a folder in the public format, or {build_hint}",
        )
    for stem in SPLIT_STEMS[split]:
        for suffix in suffixes:
            exact = data_dir / f"{stem}{suffix}"
            if exact.is_file():
                return [exact]
            shards = sorted(data_dir.glob(f"{stem}{suffix}-*"))
            if shards:
                return shards
    names = ", ".join(f"{s}{x}" for s in SPLIT_STEMS[split] for x in suffixes)
    raise KdkitError(
        f"no {split} file in {data_dir} (looked for {names})",
        where=str(data_dir),
        fix=f"put the split there, name it with the task's *_file option, or {build_hint}",
    )


def read_json_rows(
    data_dir: Path,
    explicit: Mapping[str, str | None],
    convert: Callable[[dict[str, Any], str], dict[str, Any]],
    build_hint: str,
) -> tuple[Rows, list[Path]]:
    """Rows of each split from JSON-lines files in ``data_dir`` (found by
    :func:`find_split_files`), each object mapped by ``convert(obj, "file:line")``; and the files
    read (in order, for the fingerprint)."""
    rows: Rows = {}
    used: list[Path] = []
    for split in SPLITS:
        files = find_split_files(data_dir, split, JSON_SUFFIXES, explicit.get(split), build_hint)
        used.extend(files)
        rows[split] = [convert(obj, f"{f}:{n}") for f in files for n, obj in iter_jsonl(f)]
    return rows, used


def as_binary(value: Any, where: str) -> int:
    """A 0/1 label from ``0``/``1`` (int or string) or a bool; anything else is a :class:`KdkitError`."""
    if isinstance(value, bool):
        return int(value)
    if value in (0, 1, "0", "1"):
        return int(value)
    raise KdkitError(
        f"label {shorten(value)!r} is not 0/1",
        where=where,
        fix="binary tasks need labels 0 or 1 (or true/false)",
    )


#: Hub split names -> kdkit split names.
HUB_SPLITS = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "eval": "test",
}


def dataset_splits(loaded: Mapping[str, Any], origin: str, where: str) -> dict[str, Any]:
    """kdkit's three splits of a ``datasets.DatasetDict`` (names mapped through
    :data:`HUB_SPLITS`: ``valid``/``dev`` -> ``validation``, ``eval`` -> ``test``); a missing one
    is a :class:`KdkitError` naming those it has."""
    out = {HUB_SPLITS[name]: split for name, split in loaded.items() if name in HUB_SPLITS}
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise KdkitError(
            f"{origin} has no {missing} split(s) (has {list(loaded)})",
            where=where,
            fix="give train, validation and test splits (validation may be named "
            "valid or dev, test eval)",
        )
    return out


def rename_columns(split: Any, columns: Mapping[str, str], origin: str, where: str) -> Any:
    """``split`` (a ``datasets.Dataset``) with its columns renamed by ``columns`` (user's name ->
    the task's public field name); a name it lacks is a :class:`KdkitError` listing its columns."""
    if not columns:
        return split
    unknown = [c for c in columns if c not in split.column_names]
    if unknown:
        raise KdkitError(
            f"columns: {', '.join(map(repr, unknown))} not in {origin} "
            f"(available columns: {', '.join(split.column_names)})",
            where=f"{where}.columns",
            fix="map your column names to the task's fields, e.g. columns: {code: func, y: target}",
        )
    # drop columns that would clash with a target name (a user's own "func" beside code -> func)
    clash = [c for c in columns.values() if c in split.column_names and c not in columns]
    return split.remove_columns(clash).rename_columns(dict(columns))


def rows_from_datasets(
    loaded: Mapping[str, Any],
    convert: Callable[[dict[str, Any], str], dict[str, Any]],
    origin: str,
    *,
    columns: Mapping[str, str] | None = None,
    where: str = "task",
) -> Rows:
    """kdkit rows of a ``DatasetDict``-like mapping whose columns are (after ``columns``) the
    task's public field names, each row mapped by ``convert(row, "origin[split][i]")``. A field
    the task needs and the data lacks is a :class:`KdkitError` listing the columns it has."""
    rows: Rows = {}
    for target, split in dataset_splits(loaded, origin, where).items():
        split = rename_columns(split, columns or {}, f"{origin}[{target}]", where)
        try:
            rows[target] = [
                convert(dict(obj), f"{origin}[{target}][{i}]") for i, obj in enumerate(split)
            ]
        except KdkitError as exc:
            if not exc.what.startswith("missing field"):
                raise
            raise KdkitError(
                f"{exc.what} in {origin}[{target}] (available columns: "
                f"{', '.join(split.column_names)})",
                where=f"{where}.columns",
                fix="map your column names to the task's public field names with columns:, "
                'e.g. columns: {code: func, y: target} (docs/tasks.md, "datasets inputs")',
            ) from exc
    return rows


def read_hub(
    hub_id: str,
    config: str | None,
    convert: Callable[[dict[str, Any], str], dict[str, Any]],
    revision: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> tuple[Rows, str]:
    """Rows of a hub dataset whose columns use the public field names (e.g.
    ``google/code_x_glue_cc_defect_detection``,
    ``google/code_x_glue_cc_clone_detection_big_clone_bench``), or are renamed to them by
    ``columns``; returns rows and a fingerprint.
    Needs a network (or a populated ``HF_DATASETS_CACHE``); never used by defaults or tests."""
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, config, revision=revision)
    except Exception as exc:  # the hub raises many kinds; all mean "not available"
        raise KdkitError(
            f"could not load hub dataset {hub_id!r}: {type(exc).__name__}: {exc}",
            where="task.hub",
            fix="check the id and the network, or download the files and use data_dir instead",
        ) from exc
    rows = rows_from_datasets(
        loaded, convert, f"hub dataset {hub_id!r}", columns=columns, where="task.hub"
    )
    fp = "-".join(loaded[k]._fingerprint for k in sorted(loaded))
    return rows, fp


#: ``datasets.load_dataset`` builder for each data-file suffix.
FILE_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsontxt": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".tsv": "csv",
}


def load_data_files(data_files: Mapping[str, list[Path]], builder: str | None) -> Any:
    """A ``DatasetDict`` of local JSONL/CSV/Parquet files through ``datasets.load_dataset``
    (``builder`` ``json``/``csv``/``parquet``, or found from the files' suffix)."""
    import datasets

    files = [f for group in data_files.values() for f in group]
    if builder is None:
        kinds = {FILE_BUILDERS.get(f.suffix.lower()) for f in files}
        if len(kinds) != 1 or None in kinds:
            raise KdkitError(
                f"cannot tell the format of {[str(f) for f in files]} from their suffixes",
                where="task.data_files",
                fix=f"use one of {sorted(FILE_BUILDERS)} for all files, or set task.data_format "
                "to json, csv or parquet",
            )
        builder = kinds.pop()
    kwargs: dict[str, Any] = {}
    if builder == "csv" and all(f.suffix.lower() == ".tsv" for f in files):
        kwargs["delimiter"] = "\t"
    try:
        return datasets.load_dataset(
            builder, data_files={k: [str(f) for f in v] for k, v in data_files.items()}, **kwargs
        )
    except Exception as exc:  # a parse error of any of the three formats
        raise KdkitError(
            f"could not read the data files as {builder}: {type(exc).__name__}: {exc}",
            where="task.data_files",
            fix="check the files' format (JSON lines, CSV with a header row, or "
            "Parquet) and task.data_format",
        ) from exc
