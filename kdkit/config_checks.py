"""Checks of a run configuration that need more than its schema: the ``output_dir`` template, and
(once the file is valid in itself) what only this machine can tell.

* :func:`check_output_dir_template` -- ``output_dir`` may use ``{task}``, ``{method}``,
  ``{student}``, ``{teacher}`` and ``{seed}`` only; a typo (``{taks}``), a positional field
  (``{0}``) or an unclosed brace (``{task``) used to pass ``config validate`` and end the run in a
  ``KeyError`` / ``IndexError`` / ``ValueError``.
* :func:`check_machine` -- the run directory and the cache can be created and written here (not a
  file, not under a file, not on a file system that refuses new folders such as ``/proc``); every
  ``teacher``/``student`` takes the run's ``max_length`` (a component says how many tokens it can
  take through :meth:`kdkit.api.Options.max_input_tokens`, e.g. a pre-trained teacher's position
  table).

Both run inside :func:`kdkit.config.validate`, so ``kdkit config validate`` and ``kdkit run`` (before
any work) report these problems with everything else, with ``file:line``.
"""

from __future__ import annotations

import difflib
import os
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdkit.data.paths import cache_root
from kdkit.errors import Problem, shorten

if TYPE_CHECKING:
    from kdkit.config import Document, ResolvedComponent, RunConfig

#: The fields an ``output_dir`` template may use.
OUTPUT_DIR_FIELDS = ("task", "method", "student", "teacher", "seed")


def check_output_dir_template(template: str) -> None:
    """Refuse an ``output_dir`` that is empty or not a template of :data:`OUTPUT_DIR_FIELDS`.

    Raises:
        ValueError: what is wrong and how to write it (pydantic reports it at ``output_dir``).
    """
    if not template.strip():
        raise ValueError(
            "output_dir must not be empty (an empty one would write the run into the current "
            "directory); e.g. runs/{task}-{method}-{student}-seed{seed}"
        )
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"not a valid output_dir template ({exc}); placeholders are "
            f"{_fields_text()}, and a literal brace is written {{{{ or }}}}"
        ) from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in OUTPUT_DIR_FIELDS:
            close = difflib.get_close_matches(name, OUTPUT_DIR_FIELDS, n=1, cutoff=0.6)
            shown = shorten(name, 40)
            hint = f" -- did you mean {{{close[0]}}}?" if close else ""
            raise ValueError(
                f"unknown placeholder {{{shown}}} in output_dir{hint} "
                f"(output_dir may use {_fields_text()})"
            )
        try:
            format(_sample(name), spec or "")
            if conversion not in (None, "s", "r", "a"):
                raise ValueError(f"unknown conversion !{conversion}")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"placeholder {{{name}}} in output_dir: {exc}") from None


def _fields_text() -> str:
    return ", ".join(f"{{{f}}}" for f in OUTPUT_DIR_FIELDS)


def _sample(name: str) -> object:
    return 0 if name == "seed" else "name"


def fill_output_dir(template: str, names: Mapping[str, str], seed: int) -> Path:
    """``template`` with the component names and the seed filled in."""
    return Path(
        template.format(
            task=names.get("task", "task"),
            method=names.get("method", "method"),
            student=names.get("student", "student"),
            teacher=names.get("teacher", "none"),
            seed=seed,
        )
    )


def directory_problem(path: Path) -> str | None:
    """Why a directory cannot be (created and) written at ``path``, or ``None`` when it can.

    The nearest existing folder at or above ``path`` is tried by creating (and removing at once)
    an empty temporary folder in it: permissions, read-only mounts and pseudo file systems all
    answer that honestly, where ``os.access`` says yes to root.
    """
    path = Path(os.path.abspath(path.expanduser()))
    probe = path
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            return f"{probe} is a broken symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        if probe == path:
            return f"{path} is a file, not a directory"
        return f"{probe} is a file, so {path} cannot be created under it"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kdkit-write-test-", dir=probe))
    except OSError as exc:
        where = "" if probe == path else f" (the nearest existing folder of {path})"
        return f"cannot create folders in {probe}{where}: {exc.strerror or exc}"
    return None


def check_machine(
    run: RunConfig, components: Mapping[str, ResolvedComponent], doc: Document
) -> list[Problem]:
    """The problems of a valid run configuration on this machine (paths and model limits)."""
    problems: list[Problem] = []

    def add(path: tuple[Any, ...], message: str, suggestion: str) -> None:
        filename, line = doc.origin(path)
        dotted = ".".join(map(str, path))
        if filename != doc.filename:
            message += " [from --set]"
        problems.append(Problem(dotted, message, line=line, suggestion=suggestion))

    names = {section: r.component.name for section, r in components.items()}
    out = fill_output_dir(run.output_dir, names, run.seed)
    why = directory_problem(out)
    if why:
        add(("output_dir",), why, "choose a folder you can write, e.g. --set output_dir=runs/x")
    root = cache_root(run.cache.dir)
    why = directory_problem(root)
    if why:
        where = ("cache", "dir") if run.cache.dir else ("cache",)
        origin = "cache.dir" if run.cache.dir else _cache_origin()
        add(where, f"the cache ({origin}): {why}", "point cache.dir (or KDKIT_CACHE) at a folder")
    if run.cache.teacher_outputs:
        why = directory_problem(Path(run.cache.teacher_outputs))
        if why:
            add(("cache", "teacher_outputs"), why, "give a folder (it is created if missing)")
    _check_lengths(run, components, add)
    return problems


def _cache_origin() -> str:
    return "$KDKIT_CACHE" if os.environ.get("KDKIT_CACHE") else "the default ~/.cache/kdkit"


def _check_lengths(run: RunConfig, components: Mapping[str, ResolvedComponent], add: Any) -> None:
    """``max_length`` settings longer than a teacher's or student's position table."""
    for section in ("teacher", "student"):
        resolved = components.get(section)
        if resolved is None:
            continue
        limit = resolved.options.max_input_tokens()
        if limit is None:
            continue
        asked: list[tuple[tuple[str, ...], int]] = [
            (("training", "max_length"), run.training.max_length)
        ]
        own = getattr(getattr(resolved.options, "training", None), "max_length", None)
        if isinstance(own, int):
            asked.append(((section, "training", "max_length"), own))
        for path, value in asked:
            if value > limit:
                add(
                    path,
                    f"max_length {value} is more than the {limit} tokens {section} "
                    f"'{resolved.component.name}' can take (its position table)",
                    f"set {'.'.join(path)}: {limit} or less",
                )
