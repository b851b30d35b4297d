"""Lexical baselines: TF-IDF over code tokens + logistic regression, and a token-Jaccard
threshold for pair tasks. Both are tuned on validation only; the caller scores test once.

Every scorer returns ``[N, C]`` logits so the task's own ``evaluate`` computes the metrics.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Code tokens: identifiers, integer literals, and every other non-space character on its own
#: (operators, brackets, quotes). No capturing group: scikit-learn's ``token_pattern`` needs none.
TOKEN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]"
_TOKEN = re.compile(TOKEN_PATTERN)

#: Logit given to a class the model never saw in train (keeps ``[N, C]`` shape, never predicted).
_ABSENT = -1e9

#: ``evaluate``-style scorer: ``[N, C]`` logits, ``[N]`` labels -> headline score.
Headline = Callable[[torch.Tensor, torch.Tensor], float]


def code_tokens(text: str) -> list[str]:
    """The code tokens of ``text`` (:data:`TOKEN_PATTERN`)."""
    return _TOKEN.findall(text)


@dataclass
class Fitted:
    """A tuned lexical baseline: its chosen hyper-parameters, validation score and scorer."""

    params: dict[str, Any]
    val_score: float
    tried: int
    #: ``rows`` (a dict of columns) -> ``[N, C]`` logits.
    logits: Callable[[dict[str, list[Any]]], torch.Tensor]


# -- TF-IDF + logistic regression ------------------------------------------------------------------


def _vectorizer(word: tuple[int, int], char: tuple[int, int] | None, max_features: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    parts = [
        (
            "word",
            TfidfVectorizer(
                token_pattern=TOKEN_PATTERN,
                lowercase=False,
                ngram_range=word,
                sublinear_tf=True,
                max_features=max_features,
                dtype=np.float32,
            ),
        )
    ]
    if char is not None:
        # char_wb: n-grams inside whitespace-separated chunks, so sub-tokens of identifiers
        # (``read``/``Error`` in ``readError``) count without n-grams spanning unrelated tokens.
        parts.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=char,
                    lowercase=False,
                    sublinear_tf=True,
                    min_df=2,
                    max_features=max_features,
                    dtype=np.float32,
                ),
            )
        )
    return FeatureUnion(parts)


def _pair_features(vec: Any, a: list[str], b: list[str]) -> Any:
    """``[|v_a - v_b|, v_a * v_b]`` (sparse, ``[N, 2F]``): what differs and what is shared."""
    from scipy import sparse

    va, vb = vec.transform(a), vec.transform(b)
    return sparse.hstack([abs(va - vb), va.multiply(vb)]).tocsr()


def _featurizer(
    rows: dict[str, list[Any]],
    pair_mode: str | None,
    word: tuple[int, int],
    char: tuple[int, int] | None,
    max_features: int,
) -> Callable[[dict], Any]:
    """Fit a vectorizer on the train ``rows``; return ``rows -> features`` for any split."""
    vec = _vectorizer(word, char, max_features)
    if pair_mode is None:
        vec.fit(rows["text"])
        return lambda r: vec.transform(r["text"])
    if pair_mode == "joined":
        vec.fit([f"{a}\n{b}" for a, b in zip(rows["text"], rows["text_pair"])])
        return lambda r: vec.transform([f"{a}\n{b}" for a, b in zip(r["text"], r["text_pair"])])
    # "diff_prod": one vocabulary over both sides, so the two vectors share coordinates.
    vec.fit(list(rows["text"]) + list(rows["text_pair"]))
    return lambda r: _pair_features(vec, r["text"], r["text_pair"])


def _lr_logits(clf: Any, features: Any, num_classes: int) -> torch.Tensor:
    """``[N, C]`` log-probabilities; classes absent from train get :data:`_ABSENT`."""
    out = np.full((features.shape[0], num_classes), _ABSENT, dtype=np.float64)
    out[:, clf.classes_] = clf.predict_log_proba(features)
    return torch.from_numpy(out)


#: One chain of the grid: (pair mode, word n-grams, char n-grams, class weight). Its fits share
#: one vectorizer and run over ascending ``C`` with warm starts.
Chain = tuple[str | None, tuple[int, int], tuple[int, int] | None, str | None]


def _chains(grid: dict[str, Any], is_pair: bool) -> list[Chain]:
    """The grid's chains in tie-break order (simpler features and no class weight first)."""
    pair_modes = list(grid["pair_features"]) if is_pair else [None]
    return [
        (pair_mode, tuple(word), tuple(char) if char is not None else None, weight)
        for pair_mode, word, char in itertools.product(
            pair_modes, grid["word_ngrams"], grid["char_ngrams"]
        )
        for weight in grid["class_weight"]
    ]


def _fit_chain(
    train: dict[str, list[Any]],
    chain: Chain,
    cs: list[float],
    max_features: int,
    seed: int,
    *,
    stop_at: float | None = None,
    val: dict[str, list[Any]] | None = None,
    num_classes: int = 0,
    on_fit: Callable[[float, Any, np.ndarray, Callable[[dict], Any]], None] | None = None,
) -> tuple[list[np.ndarray], Any, Callable[[dict], Any]]:
    """Fit one chain: the vectorizer on train, then logistic regression for each ``C`` in
    ascending order, each fit warm-started from the previous (more regularised) solution, which
    cuts the solver's iterations several-fold; the optimum is the same.

    Returns the validation log-probabilities ``[N_val, C]`` after each fit (when ``val`` is
    given), the classifier as it is after the fit at ``stop_at`` (the last fit otherwise) and the
    featurizer. Deterministic: a chain re-fitted up to ``stop_at`` is the classifier that scored.
    ``on_fit(C, classifier, validation logits, featurizer)`` is called after each fit (with
    ``val``), so a caller in this process can keep the best classifier without re-fitting.
    """
    from sklearn.linear_model import LogisticRegression

    pair_mode, word, char, weight = chain
    featurize = _featurizer(train, pair_mode, word, char, max_features)
    x_train = featurize(train)
    x_val = featurize(val) if val is not None else None
    y_train = np.asarray(train["label"])
    clf = LogisticRegression(class_weight=weight, max_iter=2000, warm_start=True, random_state=seed)
    val_logits: list[np.ndarray] = []
    for c in cs:
        clf.set_params(C=float(c))
        clf.fit(x_train, y_train)
        if x_val is not None:
            val_logits.append(_lr_logits(clf, x_val, num_classes).numpy())
            if on_fit is not None:
                on_fit(c, clf, val_logits[-1], featurize)
        if stop_at is not None and c == stop_at:
            break
    return val_logits, clf, featurize


def _chain_val_logits(
    train: dict[str, list[Any]],
    val: dict[str, list[Any]],
    chain: Chain,
    cs: list[float],
    max_features: int,
    num_classes: int,
    seed: int,
) -> list[np.ndarray]:
    """:func:`_fit_chain`'s validation log-probabilities, with one BLAS/OpenMP thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        logits, _, _ = _fit_chain(
            train, chain, cs, max_features, seed, val=val, num_classes=num_classes
        )
    return logits


def _columns(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The columns a fit reads, as JSON values."""
    keep = ("text", "text_pair", "label")
    return {
        k: [int(v) for v in rows[k]] if k == "label" else list(rows[k]) for k in keep if k in rows
    }


def _in_workers(
    train: dict[str, list[Any]],
    val: dict[str, list[Any]],
    chains: list[Chain],
    cs: list[float],
    max_features: int,
    num_classes: int,
    seed: int,
    workers: int,
) -> list[list[np.ndarray]]:
    """The chains' validation logits from ``workers`` processes of
    :mod:`kdkit.baselines.worker` (chains dealt round-robin, so each process starts once)."""
    import subprocess
    import sys

    shares = [list(range(w, len(chains), workers)) for w in range(workers)]
    base = {
        "train": _columns(train),
        "val": _columns(val),
        "cs": cs,
        "max_features": max_features,
        "num_classes": num_classes,
        "seed": seed,
    }
    procs = []
    for share in shares:
        job = json.dumps({**base, "chains": [list(chains[i]) for i in share]})
        proc = subprocess.Popen(
            [sys.executable, "-m", "kdkit.baselines.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append((proc, job))
    results: list[list[np.ndarray]] = [[] for _ in chains]
    failures = []
    for share, (proc, job) in zip(shares, procs):
        out, err = proc.communicate(job.encode("utf-8"))
        if proc.returncode != 0:
            failures.append(err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"])
            continue
        stacked = np.load(io.BytesIO(out), allow_pickle=False)  # [chains, len(cs), N_val, C]
        for i, arr in zip(share, stacked):
            results[i] = list(arr)
    if failures:
        raise RuntimeError(f"a baseline worker process failed: {failures[0][0]}")
    return results


def fit_tfidf_lr(
    train: dict[str, list[Any]],
    val: dict[str, list[Any]],
    *,
    num_classes: int,
    is_pair: bool,
    headline: Headline,
    grid: dict[str, Any],
    seed: int,
    workers: int = 1,
) -> Fitted:
    """Grid-search TF-IDF features x logistic regression on ``val``; return the best.

    ``grid`` has ``word_ngrams``, ``char_ngrams`` (``None`` = words only), ``C``,
    ``class_weight`` and, for pairs, ``pair_features`` (``"diff_prod"``, ``"joined"``); plus
    ``max_features``. Ties keep the earlier grid point (simpler features, no class weight, then
    smaller ``C``), so the choice is deterministic.

    ``workers`` > 1 fits the grid's chains (one per feature set and class weight) in that many
    worker processes (:mod:`kdkit.baselines.worker`, fresh interpreters: the caller may hold
    torch's thread pools, which do not survive a fork), then re-fits the chosen chain here. The
    result does not depend on ``workers``: every fit is deterministic and only validation
    log-probabilities cross the process boundary. If a worker fails, the grid is fitted here
    (with a warning).
    """
    chains = _chains(grid, is_pair)
    cs = sorted(float(c) for c in grid["C"])
    max_features = int(grid["max_features"])
    workers = max(1, min(workers, len(chains)))
    y_val = torch.as_tensor(val["label"])
    # (score, chain, C, classifier, featurizer) of the best point so far; ties keep the first
    best: tuple[float, Chain, float, Any, Callable[[dict], Any] | None] | None = None
    per_chain: list[list[np.ndarray]] | None = None
    if workers > 1:
        try:
            per_chain = _in_workers(
                train, val, chains, cs, max_features, num_classes, seed, workers
            )
        except (OSError, RuntimeError, ValueError) as exc:
            warnings.warn(
                f"kdkit: fitting the lexical baseline in {workers} processes failed ({exc}); "
                "fitting it in this process",
                stacklevel=2,
            )
    if per_chain is not None:
        for chain, logits in zip(chains, per_chain):
            for c, lg in zip(cs, logits):
                score = headline(torch.from_numpy(lg), y_val)
                if best is None or score > best[0]:
                    best = (score, chain, c, None, None)
        assert best is not None
        # the chosen chain again, here, up to the chosen C: the classifier that scored
        _, refit, refit_featurize = _fit_chain(
            train, best[1], cs, max_features, seed, stop_at=best[2]
        )
        best = (best[0], best[1], best[2], refit, refit_featurize)
    else:
        from threadpoolctl import threadpool_limits

        for chain in chains:

            def keep(
                c: float, clf: Any, lg: np.ndarray, featurize: Any, chain: Chain = chain
            ) -> None:
                nonlocal best
                score = headline(torch.from_numpy(lg), y_val)
                if best is None or score > best[0]:
                    best = (score, chain, c, copy.deepcopy(clf), featurize)

            with threadpool_limits(limits=1):
                _fit_chain(
                    train,
                    chain,
                    cs,
                    max_features,
                    seed,
                    val=val,
                    num_classes=num_classes,
                    on_fit=keep,
                )
    assert best is not None
    score, chain, c, clf, chosen = best
    assert chosen is not None
    featurize = chosen
    pair_mode, word, char, weight = chain
    params: dict[str, Any] = {
        "word_ngrams": list(word),
        "C": c,
        "class_weight": weight,
        "char_ngrams": list(char) if char else None,
    }
    if pair_mode is not None:
        params["pair_features"] = pair_mode
    tried = len(chains) * len(cs)
    return Fitted(params, score, tried, lambda r: _lr_logits(clf, featurize(r), num_classes))


# -- token-Jaccard threshold (pairs) --------------------------------------------------------------


def jaccard(a: str, b: str) -> float:
    """``|A ∩ B| / |A ∪ B|`` of the two texts' code-token sets (1.0 for two empty texts)."""
    ta, tb = set(code_tokens(a)), set(code_tokens(b))
    union = len(ta | tb)
    return len(ta & tb) / union if union else 1.0


def _threshold_logits(sims: np.ndarray, threshold: float, high_label: int) -> torch.Tensor:
    """One-hot ``[N, 2]`` logits: ``high_label`` where ``sim > threshold``, else the other."""
    above = torch.from_numpy(sims > threshold)
    preds = torch.where(above, high_label, 1 - high_label)
    return torch.nn.functional.one_hot(preds, 2).to(torch.float64)


def fit_jaccard(
    val: dict[str, list[Any]], *, headline: Headline, max_thresholds: int = 400
) -> Fitted:
    """Tune a threshold on the token-Jaccard similarity of each pair on ``val`` (binary tasks).

    Candidates: the midpoints between consecutive distinct validation similarities (at most
    ``max_thresholds``, at evenly spaced quantiles), plus one below all of them; both directions
    (similar -> class 1, the usual "clone" reading, and similar -> class 0) are tried.
    """
    sims = np.array([jaccard(a, b) for a, b in zip(val["text"], val["text_pair"])])
    y = torch.as_tensor(val["label"])
    distinct = np.unique(sims)
    mids = (distinct[:-1] + distinct[1:]) / 2 if len(distinct) > 1 else np.array([])
    if len(mids) > max_thresholds:
        mids = np.quantile(mids, np.linspace(0, 1, max_thresholds))
    candidates = np.concatenate([[distinct[0] - 1e-6], mids])
    best: tuple[float, float, int] | None = None
    tried = 0
    for high_label in (1, 0):
        for t in candidates:
            score = headline(_threshold_logits(sims, float(t), high_label), y)
            tried += 1
            if best is None or score > best[0]:
                best = (score, float(t), high_label)
    assert best is not None
    score, threshold, high_label = best

    def logits(rows: dict[str, list[Any]]) -> torch.Tensor:
        s = np.array([jaccard(a, b) for a, b in zip(rows["text"], rows["text_pair"])])
        return _threshold_logits(s, threshold, high_label)

    return Fitted({"threshold": threshold, "similar_label": high_label}, score, tried, logits)
