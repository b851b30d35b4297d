"""CKD word / layer-transforming relations: public op ``ckd_loss``."""

from __future__ import annotations

import torch

from kdkit.errors import KdkitError
from kdkit.kernels import dispatch
from kdkit.kernels.ckd.packed import TeacherRelations, ckd_loss_packed, teacher_relations
from kdkit.kernels.ckd.reference import (
    EPS,
    CKDTerms,
    check_ckd_args,
    ckd_loss_naive,
    ckd_loss_reference,
)

__all__ = [
    "EPS",
    "CKDTerms",
    "ckd_loss",
    "ckd_loss_naive",
    "ckd_loss_packed",
    "ckd_loss_reference",
    "TeacherRelations",
    "teacher_relations",
    "relations_path",
]


def _triton_reason(student: torch.Tensor, teacher: torch.Tensor, window: int) -> str | None:
    if teacher.requires_grad:
        return (
            "the Triton CKD kernel treats the teacher as frozen, but teacher.requires_grad is True"
        )
    if 2 * window + 1 > 64:
        return f"window={window} is larger than the kernel's maximum (31)"
    return None


def relations_path(student: torch.Tensor, impl: str | None = None) -> bool:
    """Whether :func:`ckd_loss` would run the CPU (packed) path for ``student``, which also takes
    the teacher's precomputed :class:`TeacherRelations` (the Triton kernel takes states only)."""
    want = dispatch.requested_impl(impl)
    if want != "auto":
        return want == "reference"
    # auto runs Triton only on CUDA tensors it can take (dispatch.choose's rule)
    return student.device.type != "cuda" or dispatch.triton_blocker([student], None) is not None


def ckd_loss(
    student: torch.Tensor,  # [B, K, T, Hs]
    teacher: torch.Tensor | TeacherRelations,  # [B, K, T, Ht], or its relations on mask
    mask: torch.Tensor,  # [B, T] bool or 0/1
    *,
    window: int = 10,
    impl: str | None = None,
) -> CKDTerms:
    """Unweighted CKD terms ``CKDTerms(word_relation, layer_relation)`` (0-dim fp32 tensors).

    Word relation, per layer and valid token ``i``: distances ``1 - cos(h_i, h_j)`` for valid
    ``j != i`` with ``|i - j| <= window`` and angles ``cos(h_j - h_i, h_k - h_i)`` for ``j, k`` in
    that window; MSE(student, teacher) of each, averaged over valid entries, summed. Layer
    relation: the same statistics per valid token across the ``K`` layers. Tokens must already be
    aligned across the two tokenisations; widths may differ. Computed from Gram entries, with
    ``EPS`` (1e-8) added to squared norms.

    ``teacher`` may also be the teacher's :func:`teacher_relations` on ``mask`` (constants in
    training, so a method can keep them between epochs): the same loss and student gradient on
    the CPU path, which then skips the teacher's half of the work (see :func:`relations_path`).
    """
    if isinstance(teacher, TeacherRelations):
        if not relations_path(student, impl):
            raise KdkitError(
                "ckd_loss got the teacher's precomputed relations, which only the CPU (packed) "
                "path takes",
                where="ckd_loss(teacher=TeacherRelations)",
                fix="pass the teacher's states [B, K, T, Ht] to the Triton kernel",
            )
        dispatch.choose("ckd_loss", "reference", (student,))
        return ckd_loss_packed(student, teacher, mask, window=window)
    check_ckd_args(student, teacher, mask, window)
    which = dispatch.choose(
        "ckd_loss", impl, (student, teacher), _triton_reason(student, teacher, window)
    )
    if which == "triton":
        from kdkit.kernels.ckd.triton import ckd_loss_triton

        return ckd_loss_triton(student, teacher, mask, window=window)
    # the reference's maths on the valid entries only (kernels/ckd/packed.py): same values to
    # fp32 rounding, several times cheaper on CPU than the Gram-over-everything spec
    return ckd_loss_packed(student, teacher, mask, window=window)
