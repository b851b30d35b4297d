"""Baselines for any task: what a score must beat before it means anything.

On a task's own splits, :func:`compute_baselines` gives the majority class, the best constant
prediction (chosen on validation), the expected score of stratified random guessing, and
lexical baselines (TF-IDF over code tokens + logistic regression; a token-Jaccard threshold for
pair tasks), tuned on validation only, with bootstrap 95 % intervals, cached as JSON under
``<kdkit cache>/baselines/``. :func:`verdict` gives the flag texts for a teacher below the
lexical baseline and a student at the majority class or a constant prediction.

See ``docs/baselines.md``.
"""

from __future__ import annotations

from .compute import VERSION, BaselineOptions, cache_path, compute_baselines
from .lexical import TOKEN_PATTERN, code_tokens, jaccard
from .result import (
    CONSTANT_FLAG,
    NAMES,
    STUDENT_FLAG,
    TEACHER_FLAG,
    Baselines,
    SplitBaselines,
    verdict,
)

__all__ = [
    "CONSTANT_FLAG",
    "NAMES",
    "STUDENT_FLAG",
    "TEACHER_FLAG",
    "TOKEN_PATTERN",
    "VERSION",
    "BaselineOptions",
    "Baselines",
    "SplitBaselines",
    "cache_path",
    "code_tokens",
    "compute_baselines",
    "jaccard",
    "verdict",
]
