"""What :func:`kdkit.baselines.compute_baselines` returns: typed results, their JSON form, and the
flag texts (:func:`verdict`) that a run prints beside a teacher or a student score."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: The flag printed when a teacher is not above the best lexical baseline (issue 18's wording).
TEACHER_FLAG = (
    "the teacher knows less than a linear model on words: distillation results here are not "
    "informative"
)
#: The flag printed when a student scores at (or within ``margin`` of) the majority class.
STUDENT_FLAG = "the student is at the majority class: it has learnt nothing from the inputs"
#: The flag printed when a student scores at the best constant prediction (e.g. always "clone"
#: for F1), which is not the majority class.
CONSTANT_FLAG = (
    "the student is at a constant prediction: it scores what always predicting one label scores "
    "and has learnt nothing from the inputs"
)

#: Display names of the baselines, in the order tables show them.
NAMES: dict[str, str] = {
    "majority": "majority class",
    "constant": "best constant prediction",
    "stratified": "stratified random",
    "tfidf_lr": "TF-IDF + logistic regression",
    "jaccard": "token-Jaccard threshold",
}


@dataclass(frozen=True)
class SplitBaselines:
    """The baselines' scores on one split.

    Attributes:
        rows: rows in the split.
        label_counts: rows per label name (labels with no row are left out).
        scores: headline metric per baseline name (``majority``, ``constant``, ``stratified``,
            ``tfidf_lr``, ``jaccard`` for pair tasks), fractions in [0, 1]. ``constant`` is
            always predicting the one label chosen on validation (for F1: usually the positive
            one, which ``majority`` misses when the classes are balanced).
        ci: 95 % interval of each score: a bootstrap over the split's rows for the fitted
            baselines, the 2.5–97.5 percentiles of the seeded draws for ``stratified``.
        metrics: every metric of the task's ``evaluate`` per baseline (``stratified``: the mean
            over the draws).
    """

    rows: int
    label_counts: dict[str, int]
    scores: dict[str, float]
    ci: dict[str, tuple[float, float]]
    metrics: dict[str, dict[str, float]]

    @property
    def majority(self) -> float:
        """Score of always predicting the train split's most frequent label."""
        return self.scores["majority"]

    @property
    def constant(self) -> float:
        """Score of always predicting the label chosen on validation (``majority`` in caches
        written before this baseline existed)."""
        return self.scores.get("constant", self.scores["majority"])

    @property
    def trivial(self) -> float:
        """The best score that needs no input: max(majority, constant). A model at or below it
        has learnt nothing from its inputs."""
        return max(self.majority, self.constant)

    @property
    def stratified(self) -> float:
        """Expected score of guessing labels at random with the train split's frequencies."""
        return self.scores["stratified"]

    @property
    def lexical(self) -> dict[str, float]:
        """The lexical baselines' scores (``tfidf_lr``, and ``jaccard`` for pair tasks)."""
        return {k: v for k, v in self.scores.items() if k in ("tfidf_lr", "jaccard")}


@dataclass(frozen=True)
class Baselines:
    """Baselines of one task on its own splits (see :func:`kdkit.baselines.compute_baselines`).

    Attributes:
        task: the task's name.
        fingerprint: the task's data fingerprint the scores were computed on.
        headline_metric: the metric every score is (the task's ``headline_metric``).
        labels: the task's label names, by class id.
        majority_label: the train split's most frequent label (ties: the lowest class id).
        splits: per reported split (``validation``, ``test`` by default) its scores.
        tuned: per lexical baseline, the hyper-parameters chosen on validation and the
            validation score they reached (``val_score``), plus ``tried`` (grid points fitted);
            ``constant``: the chosen ``label`` and its ``val_score``.
        best_lexical: the lexical baseline with the best validation score (ties: ``tfidf_lr``).
        options: the options it was computed with (they key the cache, with the fingerprint).
        seconds: wall time of the computation (not of a cache read).
        version: :data:`kdkit.baselines.compute.VERSION` of the code that computed it.
    """

    task: str
    fingerprint: str
    headline_metric: str
    labels: list[str]
    majority_label: str
    splits: dict[str, SplitBaselines]
    tuned: dict[str, dict[str, Any]]
    best_lexical: str
    options: dict[str, Any]
    seconds: float = field(compare=False)
    version: int
    from_cache: bool = field(default=False, compare=False)

    def score(self, name: str, split: str = "test") -> float:
        """The headline score of baseline ``name`` on ``split``."""
        return self.splits[split].scores[name]

    @property
    def constant_label(self) -> str:
        """The label of the best constant prediction (chosen on validation)."""
        return str(self.tuned.get("constant", {}).get("label", self.majority_label))

    def lexical_score(self, split: str = "test") -> float:
        """The score of the best lexical baseline (chosen on validation) on ``split``."""
        return self.splits[split].scores[self.best_lexical]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``summary.json`` and the cache store)."""
        out = asdict(self)
        out.pop("from_cache")
        for split in out["splits"].values():
            split["ci"] = {k: list(v) for k, v in split["ci"].items()}
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, from_cache: bool = False) -> Baselines:
        """Rebuild from :meth:`to_dict`; raises ``KeyError``/``TypeError``/``ValueError`` on a
        malformed dict (the cache treats that as corrupt)."""
        splits = {
            name: SplitBaselines(
                rows=int(s["rows"]),
                label_counts={str(k): int(v) for k, v in s["label_counts"].items()},
                scores={str(k): float(v) for k, v in s["scores"].items()},
                ci={str(k): (float(v[0]), float(v[1])) for k, v in s["ci"].items()},
                metrics={
                    str(k): {str(m): float(x) for m, x in v.items()}
                    for k, v in s["metrics"].items()
                },
            )
            for name, s in data["splits"].items()
        }
        return cls(
            task=str(data["task"]),
            fingerprint=str(data["fingerprint"]),
            headline_metric=str(data["headline_metric"]),
            labels=[str(x) for x in data["labels"]],
            majority_label=str(data["majority_label"]),
            splits=splits,
            tuned=dict(data["tuned"]),
            best_lexical=str(data["best_lexical"]),
            options=dict(data["options"]),
            seconds=float(data["seconds"]),
            version=int(data["version"]),
            from_cache=from_cache,
        )

    @classmethod
    def from_json(cls, text: str) -> Baselines:
        """Rebuild from :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def table(self, split: str = "test") -> list[tuple[str, float, tuple[float, float]]]:
        """``(display name, score, 95 % interval)`` rows of ``split``, in :data:`NAMES` order.

        The best constant prediction is listed (as ``always 'LABEL'``) only where its label is
        not the majority class: otherwise it would repeat the majority row."""
        s = self.splits[split]
        rows = []
        for k in NAMES:
            if k not in s.scores:
                continue
            if k == "constant":
                if self.constant_label == self.majority_label:
                    continue
                rows.append((f"always '{self.constant_label}'", s.scores[k], s.ci[k]))
                continue
            rows.append((NAMES[k], s.scores[k], s.ci[k]))
        return rows


def verdict(
    score: float,
    baselines: Baselines,
    *,
    role: Literal["teacher", "student"] = "teacher",
    split: str = "test",
    margin: float = 0.01,
) -> str | None:
    """The flag text for a model's headline ``score`` on ``split``, or ``None`` if nothing to flag.

    A teacher is flagged when it is not above the best lexical baseline (the one chosen on
    validation): distilling it cannot show what a method transfers. A student is flagged when it
    is within ``margin`` (absolute, default one point) of the majority class, i.e. it predicts the
    prior, or of the best constant prediction (e.g. always "clone" for F1). Both texts end with the numbers compared, e.g. ``"(teacher top1 0.366 <= TF-IDF +
    logistic regression 0.651 on test)"``.
    """
    metric = baselines.headline_metric
    if split not in baselines.splits:
        raise ValueError(f"no baselines for split {split!r} (have {sorted(baselines.splits)})")
    if role == "teacher":
        lexical = baselines.lexical_score(split)
        if score <= lexical:
            return (
                f"{TEACHER_FLAG} (teacher {metric} {score:.3f} <= "
                f"{NAMES[baselines.best_lexical]} {lexical:.3f} on {split})"
            )
        return None
    if role == "student":
        majority = baselines.score("majority", split)
        if score <= majority + margin:
            return (
                f"{STUDENT_FLAG} (student {metric} {score:.3f}, majority class "
                f"'{baselines.majority_label}' {majority:.3f} on {split})"
            )
        constant = baselines.splits[split].constant
        if score <= constant + margin:
            return (
                f"{CONSTANT_FLAG} (student {metric} {score:.3f}, always "
                f"'{baselines.constant_label}' {constant:.3f} on {split})"
            )
        return None
    raise ValueError(f"role must be 'teacher' or 'student', not {role!r}")
