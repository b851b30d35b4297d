"""Fused distillation losses: Triton kernels for CUDA, PyTorch references everywhere.

Public ops (maths in ``docs/kernels.md``): :func:`kd_loss`, :func:`dist_loss`,
:func:`infonce_loss`, :func:`ckd_loss`, :func:`sparse_kd_loss` (over a :class:`TopKTeacher` from
:func:`topk_teacher`; :func:`rescale_topk` changes its temperature). Each takes ``impl=`` (``"auto"``, ``"reference"``,
``"triton"``); see :mod:`kdkit.kernels.dispatch` for the precedence rules. Importing this package
never imports Triton: the kernels load on first use.
"""

from __future__ import annotations

from kdkit.kernels.ckd import CKDTerms, ckd_loss, ckd_loss_naive
from kdkit.kernels.dispatch import (
    IMPLS,
    KernelUnavailableError,
    get_default_impl,
    last_impls,
    reset_last_impls,
    set_default_impl,
)
from kdkit.kernels.dist import dist_loss
from kdkit.kernels.infonce import infonce_loss
from kdkit.kernels.kd import fused_linear_kd, kd_loss
from kdkit.kernels.sparse_kd import TopKTeacher, sparse_kd_loss, topk_teacher
from kdkit.kernels.sparse_kd import rescale as rescale_topk

__all__ = [
    "IMPLS",
    "CKDTerms",
    "TopKTeacher",
    "KernelUnavailableError",
    "ckd_loss",
    "ckd_loss_naive",
    "dist_loss",
    "fused_linear_kd",
    "get_default_impl",
    "infonce_loss",
    "kd_loss",
    "last_impls",
    "rescale_topk",
    "reset_last_impls",
    "set_default_impl",
    "sparse_kd_loss",
    "topk_teacher",
]
