"""Compute a task's baselines on its own splits, and cache them as JSON beside its dataset.

Any object with the :class:`kdkit.api.Task` contract works: ``load()`` gives the splits,
``evaluate(logits, labels)`` the metrics, ``headline_metric`` names the score, ``is_pair`` says
whether ``text_pair`` is read, ``fingerprint()`` keys the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from kdkit.data.fingerprint import hash_json
from kdkit.data.paths import cache_root
from kdkit.errors import KdkitError

from .lexical import Fitted, fit_jaccard, fit_tfidf_lr
from .result import Baselines, SplitBaselines

#: Bump when the computation changes, so cached baselines computed by older code are not reused.
VERSION = 3  # 3: the best constant prediction (chosen on validation)

SPLITS = ("train", "validation", "test")

#: Below this many training rows the grid is fitted in this process: starting worker processes
#: (each imports numpy, scikit-learn and torch, ~2-3 s) costs more than the fits.
PARALLEL_MIN_ROWS = 1000


def default_workers() -> int:
    """Worker processes for the lexical grid: ``KDKIT_BASELINE_WORKERS`` if set, else 1.

    One by default because more did not help where it was measured: on the 2-core VM the
    default exception grid took 165 s in one process and 176 s in two. The fits are L-BFGS over
    ``features x classes`` (2.7 M) variables, bound by memory bandwidth, which two processes
    share. Machines with more memory channels may gain; set the variable there.
    """
    env = os.environ.get("KDKIT_BASELINE_WORKERS", "").strip()
    if not env:
        return 1
    try:
        return max(1, int(env))
    except ValueError:
        raise KdkitError(
            f"KDKIT_BASELINE_WORKERS={env!r} is not a whole number",
            where="environment variable KDKIT_BASELINE_WORKERS",
            fix="set it to the number of worker processes (1 = none), or unset it",
        ) from None


_FIX_SPLITS = (
    "give the task more rows (e.g. raise max_train / max_eval, or build with more sources) "
    "so every split has at least two labels and enough rows to tune on"
)


@dataclass(frozen=True)
class BaselineOptions:
    """How the baselines are computed (every field keys the cache).

    Attributes:
        word_ngrams, char_ngrams, C, class_weight, pair_features: the TF-IDF + logistic
            regression grid tuned on validation (``char_ngrams`` ``None`` = words only).
        max_features: vocabulary cap of each TF-IDF part (most frequent n-grams kept).
        max_train_rows: seeded subsample of train for the lexical fit (keeps large tasks quick;
            majority and stratified always use the whole train split).
        bootstrap: resamples of the 95 % confidence intervals.
        stratified_draws: seeded draws averaged for the stratified random baseline.
        min_validation: fewer validation rows than this is too few to tune on (an error).
        seed: seed of the subsample, the bootstrap, the draws and the solver.
    """

    word_ngrams: tuple[tuple[int, int], ...] = ((1, 1), (1, 2))
    char_ngrams: tuple[tuple[int, int] | None, ...] = (None, (2, 4))
    C: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    class_weight: tuple[str | None, ...] = (None, "balanced")
    pair_features: tuple[str, ...] = ("diff_prod", "joined")
    max_features: int = 100_000
    max_train_rows: int = 20_000
    bootstrap: int = 1000
    stratified_draws: int = 200
    min_validation: int = 20
    seed: int = 0
    #: Extra keys for callers' own variants (stored, and part of the cache key).
    extra: dict[str, Any] = field(default_factory=dict)

    def grid(self) -> dict[str, Any]:
        """The tuning grid in the form :func:`fit_tfidf_lr` takes."""
        return {
            "word_ngrams": self.word_ngrams,
            "char_ngrams": self.char_ngrams,
            "C": self.C,
            "class_weight": self.class_weight,
            "pair_features": self.pair_features,
            "max_features": self.max_features,
        }

    def as_json(self) -> dict[str, Any]:
        """The options as JSON values (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


# -- input checks ---------------------------------------------------------------------------------


def _columns(task: Any, splits: Any) -> dict[str, dict[str, list[Any]]]:
    """Each split as plain column lists, checked against the Task contract."""
    where = f"task '{getattr(task, 'name', '?')}'"
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise KdkitError(
            f"the task has no split(s) {missing}; baselines need train, validation and test",
            where=where,
            fix="give the task all three splits",
        )
    wanted = ["text", "label"] + (["text_pair"] if task.is_pair else [])
    out: dict[str, dict[str, list[Any]]] = {}
    num_classes = len(task.labels)
    for s in SPLITS:
        names = set(splits[s].column_names)
        absent = [c for c in wanted if c not in names]
        if absent:
            raise KdkitError(
                f"split '{s}' has no column(s) {absent}",
                where=where,
                fix="a task's splits need text, label (and text_pair for a pair task) columns",
            )
        cols = {c: list(splits[s][c]) for c in wanted}
        bad = sorted({int(y) for y in cols["label"] if not 0 <= int(y) < num_classes})
        if bad:
            raise KdkitError(
                f"split '{s}' has label id(s) {bad[:5]} outside the task's {num_classes} labels",
                where=where,
                fix="map every label to an id in range(len(task.labels))",
            )
        out[s] = cols
    return out


def _check(task: Any, data: dict[str, dict[str, list[Any]]], options: BaselineOptions) -> None:
    where = f"task '{getattr(task, 'name', '?')}'"
    labels = list(task.labels)
    train = Counter(int(y) for y in data["train"]["label"])
    if len(train) < 2:
        raise KdkitError(
            f"the train split has {len(train)} distinct label(s) "
            f"({[labels[i] for i in train]}); a classifier baseline needs two",
            where=where,
            fix=_FIX_SPLITS,
        )
    n_val = len(data["validation"]["label"])
    if n_val < options.min_validation:
        raise KdkitError(
            f"the validation split has {n_val} rows, too few to tune a baseline on "
            f"(at least {options.min_validation})",
            where=where,
            fix=_FIX_SPLITS,
        )
    for s in ("validation", "test"):
        unseen = Counter(int(y) for y in data[s]["label"] if int(y) not in train)
        if unseen:
            named = ", ".join(f"{labels[i]!r} ({n} rows)" for i, n in sorted(unseen.items()))
            raise KdkitError(
                f"the {s} split has label(s) that train never shows: {named}; no "
                "model trained on train can predict them",
                where=where,
                fix="rebuild the splits so train covers every label, or drop those "
                "labels from the task's label set",
            )
    if task.is_pair and len(labels) != 2:
        raise KdkitError(
            f"a pair task with {len(labels)} labels; the pair baselines are binary",
            where=where,
            fix="pair baselines need labels [negative, positive]",
        )


# -- scores ---------------------------------------------------------------------------------------


class _Scorer:
    """The task's ``evaluate`` with the headline pulled out, plus bootstrap intervals."""

    def __init__(self, task: Any, options: BaselineOptions) -> None:
        self.task, self.metric, self.options = task, task.headline_metric, options

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        out = {k: float(v) for k, v in self.task.evaluate(logits, labels).items()}
        if self.metric not in out:
            raise KdkitError(
                f"the task's evaluate() returned no '{self.metric}' (its headline "
                f"metric); it returned {sorted(out)}",
                where=f"task '{self.task.name}'",
                fix="return the headline metric from evaluate()",
            )
        return out

    def headline(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return self.metrics(logits, labels)[self.metric]

    def bootstrap(
        self, logits: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> tuple[float, float]:
        """Percentile 95 % interval of the headline over resamples of the rows."""
        n = len(labels)
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (self.options.bootstrap, n), generator=gen)
        vals = np.array([self.headline(logits[i], labels[i]) for i in idx])
        lo, hi = np.percentile(vals, [2.5, 97.5])
        return float(lo), float(hi)


def _prior_logits(prior: np.ndarray, n: int) -> torch.Tensor:
    """``[N, C]`` log train frequencies: arg-max is the majority class (ties: lowest id), and the
    top-k are the k most frequent labels, the same for every row."""
    logp = np.log(np.maximum(prior, 1e-12))
    return torch.from_numpy(np.tile(logp, (n, 1)))


def _constant_logits(label: int, n: int, num_classes: int) -> torch.Tensor:
    """``[N, C]`` logits that rank ``label`` first for every row (then the other ids in order)."""
    logits = torch.zeros(n, num_classes, dtype=torch.float64)
    logits[:, label] = 1.0
    return logits


def _best_constant(
    scorer: _Scorer, labels: torch.Tensor, num_classes: int, prior: np.ndarray
) -> tuple[int, float]:
    """The label whose constant prediction scores best on ``labels`` (the validation split) and
    that score. Ties go to the more frequent train label, then the lowest id.

    For accuracy the best constant is the validation split's most frequent label, usually the
    majority class; for F1 of the positive class it is "always positive", which majority (a train
    frequency) misses whenever the negative class is as frequent or more.
    """
    order = sorted(range(num_classes), key=lambda c: (-prior[c], c))
    scores = {
        c: scorer.headline(_constant_logits(c, len(labels), num_classes), labels) for c in order
    }
    best = max(order, key=lambda c: scores[c])  # max() keeps the first of equal scores
    return best, scores[best]


def _stratified(
    scorer: _Scorer, prior: np.ndarray, labels: torch.Tensor, seed: int
) -> tuple[float, tuple[float, float], dict[str, float]]:
    """Seeded average of the metrics of random rankings drawn with the train frequencies.

    Each draw's logits are ``log p + Gumbel`` noise, so each row's arg-max follows ``p``
    (Gumbel-max) and its top-k is a draw without replacement from ``p``. For accuracy-like
    metrics the expectation is ``sum_c q_c p_c`` (``q``: the split's label mix), which the mean
    estimates.
    """
    gen = torch.Generator().manual_seed(seed)
    logp = torch.from_numpy(np.log(np.maximum(prior, 1e-12)))
    draws: list[dict[str, float]] = []
    for _ in range(scorer.options.stratified_draws):
        u = torch.rand(len(labels), len(prior), generator=gen, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
        draws.append(scorer.metrics(logp + gumbel, labels))
    mean = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
    vals = [d[scorer.metric] for d in draws]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return mean[scorer.metric], (float(lo), float(hi)), mean


def _compute(task: Any, report: Sequence[str], options: BaselineOptions, workers: int) -> Baselines:
    start = time.perf_counter()
    data = _columns(task, task.load())
    _check(task, data, options)
    labels = list(task.labels)
    num_classes = len(labels)
    scorer = _Scorer(task, options)

    counts = np.bincount(np.asarray(data["train"]["label"], dtype=np.int64), minlength=num_classes)
    prior = counts / counts.sum()
    majority = int(np.argmax(prior))

    train = data["train"]
    if len(train["label"]) > options.max_train_rows:
        keep = sorted(
            random.Random(options.seed).sample(range(len(train["label"])), options.max_train_rows)
        )
        train = {k: [v[i] for i in keep] for k, v in train.items()}
    # One BLAS/OpenMP thread: the fits are small, and on a shared machine multi-threaded
    # solvers spin-wait for busy cores (measured: 13x slower with 2 threads under load).
    with threadpool_limits(limits=1):
        fitted: dict[str, Fitted] = {
            "tfidf_lr": fit_tfidf_lr(
                train,
                data["validation"],
                num_classes=num_classes,
                is_pair=task.is_pair,
                headline=scorer.headline,
                grid=options.grid(),
                seed=options.seed,
                workers=workers if len(train["label"]) >= PARALLEL_MIN_ROWS else 1,
            )
        }
    if task.is_pair:
        fitted["jaccard"] = fit_jaccard(data["validation"], headline=scorer.headline)
    val_y = torch.as_tensor(data["validation"]["label"], dtype=torch.long)
    constant, constant_val = _best_constant(scorer, val_y, num_classes, prior)
    # Ties go to tfidf_lr (first in the dict): max() keeps the first maximum.
    best_lexical = max(fitted, key=lambda k: fitted[k].val_score)

    splits: dict[str, SplitBaselines] = {}
    for k, split in enumerate(report):
        rows = data[split]
        y = torch.as_tensor(rows["label"], dtype=torch.long)
        logits = {"majority": _prior_logits(prior, len(y))}
        if constant != majority:  # else it is the majority's prediction: copied below
            logits["constant"] = _constant_logits(constant, len(y), num_classes)
        logits.update({name: f.logits(rows) for name, f in fitted.items()})
        scores: dict[str, float] = {}
        ci: dict[str, tuple[float, float]] = {}
        metrics: dict[str, dict[str, float]] = {}
        for j, (name, lg) in enumerate(logits.items()):
            metrics[name] = scorer.metrics(lg, y)
            scores[name] = metrics[name][scorer.metric]
            ci[name] = scorer.bootstrap(lg, y, options.seed + 1000 * k + j)
        if constant == majority:
            # The same top-1 for every row as the majority's log-prior logits; the metrics are
            # the majority's (a top-k metric ranks the rest by train frequency here too).
            scores["constant"], ci["constant"] = scores["majority"], ci["majority"]
            metrics["constant"] = dict(metrics["majority"])
        s_score, s_ci, s_metrics = _stratified(scorer, prior, y, options.seed + 1000 * k + 999)
        scores["stratified"], ci["stratified"], metrics["stratified"] = s_score, s_ci, s_metrics
        label_counts = Counter(labels[int(i)] for i in rows["label"])
        splits[split] = SplitBaselines(
            rows=len(y),
            label_counts=dict(sorted(label_counts.items())),
            scores=scores,
            ci=ci,
            metrics=metrics,
        )

    tuned = {
        name: {**f.params, "val_score": f.val_score, "tried": f.tried} for name, f in fitted.items()
    }
    tuned["tfidf_lr"]["train_rows"] = len(train["label"])
    tuned["constant"] = {"label": labels[constant], "val_score": constant_val}
    return Baselines(
        task=task.name,
        fingerprint=task.fingerprint(),
        headline_metric=scorer.metric,
        labels=labels,
        majority_label=labels[majority],
        splits=splits,
        tuned=tuned,
        best_lexical=best_lexical,
        options=options.as_json(),
        seconds=round(time.perf_counter() - start, 3),
        version=VERSION,
    )


# -- cache + public entry point -------------------------------------------------------------------


def cache_path(
    task: Any,
    report: Sequence[str],
    options: BaselineOptions,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where the baselines of ``task`` with these options are cached:
    ``<cache>/baselines/<task>-<key>.json``, ``key`` hashing the task's fingerprint, the reported
    splits, the options, :data:`VERSION` and scikit-learn's version."""
    import sklearn

    key = hash_json(
        {
            "task": task.fingerprint(),
            "splits": list(report),
            "version": VERSION,
            "options": options.as_json(),
            "sklearn": sklearn.__version__,
        }
    )
    return cache_root(cache_dir) / "baselines" / f"{task.name}-{key}.json"


def _checksum_path(path: Path) -> Path:
    """The SHA-256 written beside a cached baselines file (a flipped digit is valid JSON)."""
    return path.with_name(path.name + ".sha256")


def _read_cache(path: Path, task: Any) -> Baselines | None:
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        digest = _checksum_path(path)
        if digest.is_file() and digest.read_text().strip() != hashlib.sha256(data).hexdigest():
            raise ValueError("the file changed since it was written (its SHA-256 differs)")
        found = Baselines.from_dict(json.loads(data.decode("utf-8")), from_cache=True)
        if found.fingerprint != task.fingerprint() or found.version != VERSION:
            raise ValueError("fingerprint or version does not match its key")
        return found
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        warnings.warn(
            f"kdkit: the cached baselines {path} are unreadable ({type(exc).__name__}: "
            f"{exc}); recomputing them",
            stacklevel=3,
        )
        return None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compute_baselines(
    task: Any,
    splits: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    options: BaselineOptions | None = None,
    *,
    use_cache: bool = True,
    workers: int | None = None,
) -> Baselines:
    """Majority-class, stratified-random and lexical baselines of ``task`` on its own splits.

    Args:
        task: any :class:`kdkit.api.Task` (its ``load()``, ``evaluate()``, ``headline_metric``,
            ``labels``, ``is_pair``, ``fingerprint()`` are used).
        splits: the splits to score (default ``("validation", "test")``). Tuning always uses
            train and validation only; test is scored once, with the chosen hyper-parameters.
        cache_dir: the kdkit cache root (default :func:`kdkit.data.paths.cache_root`).
        options: grid, bootstrap and seeds (default :class:`BaselineOptions`).
        use_cache: read and write ``<cache>/baselines/`` (a corrupt file is recomputed with a
            warning).
        workers: processes that fit the lexical grid (default :func:`default_workers`: 1
            unless ``KDKIT_BASELINE_WORKERS`` is set; tasks with fewer than
            :data:`PARALLEL_MIN_ROWS` training rows always use one). The result
            does not depend on it, so it is not part of the cache key.

    Raises:
        KdkitError: splits too small to tune (fewer than two labels in train, validation under
            ``options.min_validation`` rows), a validation/test label that train never shows,
            missing splits or columns, label ids outside the label set.
    """
    options = options or BaselineOptions()
    report = tuple(splits) if splits is not None else ("validation", "test")
    unknown = [s for s in report if s not in SPLITS]
    if unknown or not report:
        raise KdkitError(
            f"unknown split(s) {unknown or list(report)} for baselines",
            where="compute_baselines(splits=...)",
            fix=f"choose among {list(SPLITS)}",
        )
    workers = default_workers() if workers is None else max(1, workers)
    if not use_cache:
        return _compute(task, report, options, workers)
    path = cache_path(task, report, options, cache_dir)
    found = _read_cache(path, task)
    if found is not None:
        return found
    result = _compute(task, report, options, workers)
    text = result.to_json()
    _write_atomic(path, text)
    _write_atomic(_checksum_path(path), hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n")
    return result
