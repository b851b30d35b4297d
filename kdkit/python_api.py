"""The Python API for notebooks and scripts: :func:`distill` a run, :func:`load_model` to predict.

:func:`distill` takes the sections of a run file as keyword arguments — ``task``, ``teacher``,
``student``, ``method``, ``training`` and the rest (``seed``, ``output_dir``, ``cache``,
``kernels``, ``reporters``) — and validates them exactly as ``kdkit run FILE`` validates the file
(:func:`kdkit.config.validate`): a typo is a :class:`kdkit.errors.ConfigError` that lists every
problem, with the same "did you mean" suggestions. A section is given as

* a name: ``student="gru"``;
* a dict, as in YAML: ``method={"name": "kd", "temperature": 4}``;
* a typed options object: ``training=TrainingConfig(epochs=2)``, ``method=KDOptions(alpha=0.7)``
  (the component is the one registered with that options class; where several are, pass
  ``("kd", KDOptions(...))``);
* a ``(name, options)`` pair, options a dict or an options object.

The run goes through the same engine as ``kdkit run`` (:func:`kdkit.engine.runner.run_once`), so
its run directory is what ``kdkit run`` writes; :class:`DistillResult` gives the metrics, the run
directory, the saved model's path and the trained student. See docs/python-api.md.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from kdkit.errors import ConfigError, KdkitError, Problem

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import torch

    from kdkit.config import ResolvedConfig
    from kdkit.discovery import Plugins
    from kdkit.registry import Registry

#: What :func:`distill`'s errors name as the source of the configuration.
SOURCE = "kdkit.distill()"
#: The fix of a :class:`ConfigError` raised for :func:`distill`'s arguments.
ARGUMENTS_FIX = (
    "change the keyword arguments as suggested; `kdkit config schema` lists every "
    "section's options, `kdkit plugins` every component"
)


def _plain(value: Any) -> Any:
    """``value`` as run-file data: options objects dumped (only the fields set), paths as str."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _component_names(registry: Registry, kind: str, options: BaseModel) -> list[str]:
    """The ``kind`` components registered with ``type(options)`` as their options class."""
    return sorted(n for n, c in registry.components[kind].items() if c.config is type(options))


def _section(
    value: Any, path: str, kind: str | None, registry: Registry, problems: list[Problem]
) -> Any:
    """One section given to :func:`distill` as the data a run file would hold there."""
    if kind is None or isinstance(value, str):
        return _plain(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        name, options = value
        return {"name": name, **(_plain(options) or {})}
    if isinstance(value, BaseModel):
        names = _component_names(registry, kind, value)
        if len(names) == 1:
            return {"name": names[0], **_plain(value)}
        cls = type(value).__name__
        which = (
            f"several {kind}s use {cls}: {', '.join(names)}"
            if names
            else f"no installed {kind} uses {cls} as its options"
        )
        problems.append(
            Problem(
                path,
                f"cannot tell which {kind} these options are for ({which})",
                suggestion="pass (NAME, options) or {'name': NAME, ...}",
            )
        )
        return None
    return _plain(value)


def run_data(sections: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    """The run-file data of :func:`distill`'s keyword arguments (``None`` = section left out).

    Raises:
        ConfigError: an options object whose component cannot be told.
    """
    from kdkit.config import COMPONENT_SECTIONS

    problems: list[Problem] = []
    data: dict[str, Any] = {}
    for key, value in sections.items():
        if value is None:
            continue  # as if the key were not in the file (a required one is reported as missing)
        if key == "reporters" and isinstance(value, (list, tuple)):
            data[key] = [
                _section(v, f"reporters.{i}", "reporter", registry, problems)
                for i, v in enumerate(value)
            ]
        else:
            data[key] = _section(value, key, COMPONENT_SECTIONS.get(key), registry, problems)
    if problems:
        raise ConfigError(problems, SOURCE, subject=f"the arguments of {SOURCE}", fix=ARGUMENTS_FIX)
    return data


def configure(*, plugins: Plugins | None = None, **sections: Any) -> ResolvedConfig:
    """Validate :func:`distill`'s sections into a run configuration without running it.

    Raises:
        ConfigError: every problem found, as ``kdkit config validate`` reports a run file's.
    """
    from kdkit.config import Document, validate
    from kdkit.discovery import load_plugins

    plugins = plugins or load_plugins()
    doc = Document(run_data(sections, plugins.registry), SOURCE)
    try:
        return validate(doc, plugins.registry)
    except ConfigError as exc:  # the same problems, with a fix that speaks of arguments
        raise ConfigError(
            exc.problems, SOURCE, subject=f"the arguments of {SOURCE}", fix=ARGUMENTS_FIX
        ) from None


def distill(
    *,
    task: Any = None,
    teacher: Any = None,
    student: Any = None,
    method: Any = None,
    training: Any = None,
    dataset: Any = None,
    progress: bool = True,
    resume: str | Path | None = None,
    plugins: Plugins | None = None,
    **rest: Any,
) -> DistillResult:
    """Run one distillation, as ``kdkit run FILE`` would with these sections in FILE.

    Args:
        task, teacher, student, method, training: the run file's sections (a name, a dict, an
            options object, or a ``(name, options)`` pair; see the module docstring).
            ``teacher`` may be left out for ``method="ft"``.
        dataset: an in-memory ``datasets.Dataset`` or ``DatasetDict`` (or ``{split: Dataset}``)
            for the task to read instead of its files or offline build; the task's ``columns:``
            option maps its field names (docs/tasks.md, "datasets inputs"). A single Dataset is
            split 80/10/10 with the task's ``build_seed``. Pass it again with ``resume``.
        progress: show progress bars (on stderr; plain lines when it is not a terminal).
        resume: a run directory to continue (its stored configuration is not re-read: pass the
            same sections again).
        plugins: the plugins to build from (default: the installed ones).
        **rest: the other run-file keys: ``seed``, ``output_dir``, ``cache``, ``kernels``,
            ``reporters``. An unknown key is reported like an unknown key in a run file.

    Returns:
        The run's :class:`DistillResult`.

    Raises:
        ConfigError: the sections do not validate (every problem, with suggestions).
        KdkitError: the run cannot start or fails (e.g. its directory already holds a run).
    """
    from kdkit.discovery import load_plugins
    from kdkit.engine.runner import run_once

    plugins = plugins or load_plugins()
    resolved = configure(
        plugins=plugins,
        task=task,
        teacher=teacher,
        student=student,
        method=method,
        training=training,
        **rest,
    )
    summary = run_once(
        resolved,
        plugins,
        resume=str(resume) if resume else None,
        progress=progress,
        dataset=dataset,
    )
    return DistillResult(summary, resolved, plugins.registry)


@dataclass
class DistillResult:
    """What :func:`distill` produced.

    Attributes:
        summary: the run's summary (what ``summary.json`` holds).
        config: the validated configuration the run used.
    """

    summary: dict[str, Any]
    config: ResolvedConfig
    registry: Registry | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        """The run directory (config, metrics, checkpoints, summary, the saved students)."""
        return Path(self.summary["run_dir"])

    @property
    def model_path(self) -> Path:
        """The saved best student (on validation): ``run_dir/best/model``."""
        return self.run_dir / "best" / "model"

    @property
    def metrics(self) -> dict[str, float]:
        """The best student's test metrics (the task's: ``{"top1": 0.33, "top3": 0.61, ...}``)."""
        return dict(self.summary["test"])

    @property
    def validation_metrics(self) -> dict[str, float]:
        """The best student's validation metrics (the ones model selection used)."""
        return dict(self.summary["best_validation"])

    @property
    def teacher_metrics(self) -> dict[str, float] | None:
        """The teacher's test metrics, or ``None`` for a run without a teacher."""
        teacher = self.summary.get("teacher")
        return dict(teacher["test"]) if teacher else None

    @property
    def headline(self) -> float:
        """The task's headline metric of the best student on test."""
        return float(self.summary["test"][self.summary["headline_metric"]])

    @functools.cached_property
    def model(self) -> Model:
        """The saved best student loaded for inference (:func:`load_model` of
        :attr:`model_path`)."""
        return load_model(self.model_path, registry=self.registry)

    @property
    def student(self) -> Any:
        """The trained student itself (a :class:`kdkit.api.Student`, a ``torch.nn.Module``, in
        eval mode): the best one on validation, as saved."""
        return self.model.student

    def __str__(self) -> str:
        return str(self.summary.get("table") or self.summary)


def load_model(
    path: str | Path, *, device: str | None = None, registry: Registry | None = None
) -> Model:
    """Load a model kdkit saved, for inference: a model directory (``kdkit.json`` in it) or a run
    directory (its best, else last, student) — what ``kdkit predict`` accepts.

    Args:
        path: the directory.
        device: where to run it (default: ``cpu``).
        registry: where the component that saved it is found (default: the installed plugins).

    Raises:
        KdkitError: no kdkit model there, or the component that saved it is not installed.
    """
    from kdkit.engine.persist import find_model_dir, load_student
    from kdkit.models import read_model_meta

    directory = find_model_dir(path)
    meta = read_model_meta(directory)
    student = load_student(directory, registry).eval()
    student.to(device or "cpu")
    return Model(student, list(meta.get("labels") or []), directory, device or "cpu")


#: A text to classify: code, or a pair of code snippets for a pair task (clone detection).
Text = str | tuple[str, str]


@dataclass
class Model:
    """A saved student ready for inference (:func:`load_model`).

    Attributes:
        student: the model itself (a :class:`kdkit.api.Student`, a ``torch.nn.Module``).
        labels: the task's label names, in logit order (from the model's ``kdkit.json``).
        path: the model directory.
        device: where it runs.
    """

    student: Any
    labels: list[str]
    path: Path
    device: str = "cpu"

    def label(self, index: int) -> str:
        """The name of label ``index`` (its number when the model saved no names)."""
        return self.labels[index] if index < len(self.labels) else str(index)

    def probabilities(
        self, texts: Text | Sequence[Text], *, max_length: int = 512, batch_size: int = 32
    ) -> torch.Tensor:
        """Class probabilities, ``[N, num_labels]`` (float32, on the CPU), of ``texts``.

        ``texts``: a text or a list of them; a text is code (a str) or, for a pair task, a
        ``(code_a, code_b)`` tuple.
        """
        import torch

        from kdkit.api import Needs

        items = _texts(texts)
        out = []
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                enc = self.student.encode(items[start : start + batch_size], max_length)
                logits = self.student(enc.to(self.device), Needs()).logits
                out.append(torch.softmax(logits.float(), -1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def predict(
        self,
        texts: Text | Sequence[Text],
        *,
        top_k: int = 1,
        max_length: int = 512,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """The most likely label of each text, with its probability (as ``kdkit predict``):
        ``[{"label": "KeyError", "probability": 0.83}, ...]``; ``top_k > 1`` adds ``"top"``,
        the ``top_k`` most likely ``[label, probability]`` pairs."""
        import torch

        probs = self.probabilities(texts, max_length=max_length, batch_size=batch_size)
        rows = []
        for p in probs:
            row: dict[str, Any] = {
                "label": self.label(int(p.argmax())),
                "probability": float(p.max()),
            }
            if top_k > 1:
                top = torch.topk(p, min(top_k, p.numel()))
                row["top"] = [
                    [self.label(int(k)), float(v)] for v, k in zip(top.values, top.indices)
                ]
            rows.append(row)
        return rows


def _texts(texts: Text | Sequence[Text]) -> list[Text]:
    """``texts`` as a list of texts; a list of pairs must be tuples (a list of two strings is
    two texts, as anywhere in Python)."""
    pair = isinstance(texts, tuple) and len(texts) == 2 and all(isinstance(x, str) for x in texts)
    if isinstance(texts, str) or pair:
        items: list[Any] = [texts]
    else:
        items = list(texts)
    for i, t in enumerate(items):
        ok = isinstance(t, str) or (
            isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t)
        )
        if not ok:
            raise KdkitError(
                f"text {i} is a {type(t).__name__}, not code",
                where="Model.predict",
                fix="pass a str, a (code_a, code_b) tuple for a pair task, or a list of them",
            )
    return items
