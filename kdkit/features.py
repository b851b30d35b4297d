"""Feature helpers shared by feature-based KD methods (built-in and third-party).

Three tools:

* :func:`map_layers` — which teacher layer each student layer learns from, for models of any
  depth (a 12- or 22-layer teacher, a 2- to 8-layer Transformer or GRU student).
* :func:`align_spans` / :class:`SpanAlignment` — teacher and student tokenise the same code
  differently, so their token sequences are never compared by position. Both sides are pooled
  onto *shared character spans* built from the tokens' character offsets.
* pooling helpers: :func:`masked_mean`, :func:`pool_to_spans`.

Layers are numbered ``0..num_layers`` (0 = embedding output), as everywhere in kdkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from kdkit.errors import KdkitError

if TYPE_CHECKING:
    from kdkit.api import ModelOutput

#: A layer-mapping strategy: a name, a list of teacher layers (one per mapped student layer),
#: or explicit ``[student_layer, teacher_layer]`` pairs.
LayerStrategy = Literal["uniform", "skip", "last"] | list[int] | list[tuple[int, int]]

_STRATEGY_FIX = (
    "use strategy 'uniform' (allows several student layers per teacher layer), a shallower "
    "student, or an explicit list of [student_layer, teacher_layer] pairs"
)


def _check_depth(name: str, depth: int, where: str) -> None:
    if not isinstance(depth, int) or depth < 1:
        raise KdkitError(
            f"{name} has {depth!r} layers; layer mapping needs at least one encoder layer",
            where=where,
            fix="check the model's ModelInfo.num_layers",
        )


def map_layers(
    student_layers: int,
    teacher_layers: int,
    strategy: LayerStrategy = "uniform",
    *,
    exclude_last: bool = False,
    include_embeddings: bool = False,
    where: str = "method.layers",
) -> list[tuple[int, int]]:
    """Pair student layers with teacher layers.

    Student layers ``1..L_s`` are mapped (``0``, the embeddings, only with
    ``include_embeddings``: it maps to the teacher's embeddings ``0``). With ``L_t`` teacher layers:

    * ``"uniform"``: ``m(s) = ceil(s · L_t / L_s)`` — proportional depth, always ends on the last
      teacher layer. With ``L_t = 12`` this is PKD's ``m(l) = (l+1)·12/L_s`` (0-based ``l``).
      Works for any depths; if ``L_s > L_t`` several student layers share a teacher layer.
    * ``"skip"``: ``m(s) = s · (L_t // L_s)`` — PKD-Skip, every k-th teacher layer. Needs
      ``L_s <= L_t``.
    * ``"last"``: ``m(s) = L_t − L_s + s`` — PKD-Last, the top ``L_s`` teacher layers. Needs
      ``L_s <= L_t``.
    * a list of ints ``[t_1, ..., t_{L_s}]``: the teacher layer of each student layer ``1..L_s``.
    * a list of pairs ``[[s, t], ...]``: exactly these pairs (any subset of layers, in order).

    ``exclude_last`` drops the pair of the last student layer (PKD: the output is already
    distilled through the logits). Explicit pairs are returned as given (sorted by student layer).

    Returns:
        ``[(student_layer, teacher_layer), ...]`` sorted by student layer.

    Raises:
        KdkitError: for an impossible mapping (a layer beyond a model's depth, a list of the wrong
            length, ``skip``/``last`` with a student deeper than the teacher, an empty result).
    """
    _check_depth("the student", student_layers, where)
    _check_depth("the teacher", teacher_layers, where)
    ls, lt = student_layers, teacher_layers

    if isinstance(strategy, str):
        if strategy in ("skip", "last") and ls > lt:
            raise KdkitError(
                f"strategy '{strategy}' needs one distinct teacher layer per student layer, but "
                f"the student has {ls} layers and the teacher only {lt}",
                where=where,
                fix=_STRATEGY_FIX,
            )
        if strategy == "uniform":
            pairs = [(s, (s * lt + ls - 1) // ls) for s in range(1, ls + 1)]
        elif strategy == "skip":
            pairs = [(s, s * (lt // ls)) for s in range(1, ls + 1)]
        elif strategy == "last":
            pairs = [(s, lt - ls + s) for s in range(1, ls + 1)]
        else:
            raise KdkitError(
                f"unknown layer-mapping strategy {strategy!r}",
                where=where,
                fix="use 'uniform', 'skip', 'last', a list of teacher layers or a list of "
                "[student_layer, teacher_layer] pairs",
            )
        if exclude_last:
            pairs = pairs[:-1]
        if include_embeddings:
            pairs = [(0, 0), *pairs]
    else:
        pairs = _explicit_pairs(list(strategy), ls, where)
        if exclude_last:
            pairs = [p for p in pairs if p[0] != ls]

    for s, t in pairs:
        if not 0 <= s <= ls or not 0 <= t <= lt:
            raise KdkitError(
                f"layer pair (student {s}, teacher {t}) is out of range: the student has layers "
                f"0..{ls} and the teacher 0..{lt}",
                where=where,
                fix=f"use student layers in 0..{ls} and teacher layers in 0..{lt}",
            )
    if not pairs:
        raise KdkitError(
            f"the layer mapping is empty (student {ls} layers, teacher {lt} layers, "
            f"exclude_last={exclude_last})",
            where=where,
            fix="set exclude_last: false, use a deeper student, or give explicit pairs",
        )
    return pairs


def _explicit_pairs(items: list, ls: int, where: str) -> list[tuple[int, int]]:
    """Normalise an explicit mapping: ints (one per student layer) or ``[s, t]`` pairs."""
    if items and all(isinstance(x, int) for x in items):
        if len(items) != ls:
            raise KdkitError(
                f"the layer list has {len(items)} entries but the student has {ls} layers",
                where=where,
                fix=f"give one teacher layer per student layer 1..{ls}, or [student, teacher] "
                "pairs for a subset",
            )
        return [(s + 1, int(t)) for s, t in enumerate(items)]
    try:
        pairs = sorted((int(s), int(t)) for s, t in items)
    except (TypeError, ValueError):
        raise KdkitError(
            f"cannot read the layer mapping {items!r}",
            where=where,
            fix="give a list of teacher layers ([3, 6, 9, 12]) or of pairs ([[1, 3], [2, 6]])",
        ) from None
    if len({s for s, _ in pairs}) != len(pairs):
        raise KdkitError(
            f"a student layer appears twice in {items!r}",
            where=where,
            fix="map each student layer to one teacher layer",
        )
    return pairs


# ------------------------------------------------------------------------------------ pooling


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over real tokens: ``[B, L, H]``, ``[B, L]`` -> ``[B, H]``.

    Rows without any real token give zeros (not NaN).
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def pool_to_spans(hidden: torch.Tensor, index: torch.Tensor, num_spans: int) -> torch.Tensor:
    """Mean-pool tokens onto spans: ``[B, L, H]`` with ``index`` ``[B, L]`` -> ``[B, T, H]``.

    ``index[b, i]`` is the span of token ``i`` (``-1``: the token belongs to no span). Spans
    without tokens are zeros. Vectorised with one ``index_add`` of whole ``H``-wide rows into
    ``B (T + 1)`` slots (differentiable in ``hidden``): the same sums in the same order as a
    ``scatter_add`` with an expanded index, bit for bit, at about half its CPU time.
    """
    b, length, h = hidden.shape
    slot = torch.where(index >= 0, index, num_spans)  # unassigned tokens -> a dump slot
    # row b's slots are b (T + 1) .. b (T + 1) + T: every token row goes to one slot row
    rows = (slot + torch.arange(b, device=slot.device).unsqueeze(-1) * (num_spans + 1)).reshape(-1)
    out = hidden.new_zeros(b * (num_spans + 1), h).index_add(0, rows, hidden.reshape(-1, h))
    counts = hidden.new_zeros(b * (num_spans + 1)).index_add(
        0, rows, torch.ones_like(rows, dtype=hidden.dtype)
    )
    out = out.view(b, num_spans + 1, h)[:, :num_spans]
    return out / counts.view(b, num_spans + 1)[:, :num_spans].clamp_min(1.0).unsqueeze(-1)


# ------------------------------------------------------------------------------- alignment


@dataclass
class SpanAlignment:
    """Teacher and student tokens assigned to shared character spans.

    Attributes:
        student_index: ``[B, L_s]`` span of each student token, ``-1`` if it is in none.
        teacher_index: ``[B, L_t]`` span of each teacher token, ``-1`` if it is in none.
        span_mask: ``[B, T]`` bool, ``True`` for spans that exist in the row.
        span_bounds: ``[B, T, 2]`` character ``[start, end)`` of each span (0 where masked).
    """

    student_index: torch.Tensor
    teacher_index: torch.Tensor
    span_mask: torch.Tensor
    span_bounds: torch.Tensor

    @property
    def num_spans(self) -> int:
        """``T``, the padded number of spans."""
        return self.span_mask.shape[1]

    def pool_student(self, hidden: torch.Tensor) -> torch.Tensor:
        """Student token states ``[B, L_s, H]`` -> span states ``[B, T, H]``."""
        return pool_to_spans(hidden, self.student_index, self.num_spans)

    def pool_teacher(self, hidden: torch.Tensor) -> torch.Tensor:
        """Teacher token states ``[B, L_t, H]`` -> span states ``[B, T, H]``."""
        return pool_to_spans(hidden, self.teacher_index, self.num_spans)


def _side_marks(
    offsets: torch.Tensor, valid: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per character position ``p``: is ``p`` a token boundary, is it inside a token.

    ``offsets`` ``[B, L, 2]``, ``valid`` ``[B, L]`` -> two ``[B, width]`` tensors:
    ``boundary`` (some token starts or ends at ``p``) and ``inside`` (a token has
    ``start < p < end``, so no span may be cut at ``p``).
    """
    b = offsets.shape[0]
    start, end = offsets[..., 0], offsets[..., 1]
    one = valid.long()
    boundary = torch.zeros(b, width + 1, dtype=torch.long, device=offsets.device)
    boundary.scatter_add_(1, torch.where(valid, start, width), one)
    boundary.scatter_add_(1, torch.where(valid, end, width), one)
    # difference array: +1 at start+1, -1 at end -> cumsum counts tokens strictly containing p
    inner = valid & (end > start + 1)
    diff = torch.zeros(b, width + 2, dtype=torch.long, device=offsets.device)
    diff.scatter_add_(1, torch.where(inner, start + 1, width + 1), inner.long())
    diff.scatter_add_(1, torch.where(inner, end, width + 1), -inner.long())
    inside = diff.cumsum(1)[:, : width + 1]
    return boundary[:, :width] > 0, inside[:, :width] > 0


def align_spans(
    student_offsets: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_offsets: torch.Tensor,
    teacher_mask: torch.Tensor,
) -> SpanAlignment:
    """Build the coarsest common segmentation of two tokenisations of the same texts.

    A position ``p`` is a *shared cut* when it is a token boundary of either side and no real
    token of either side strictly contains it. Spans run between consecutive shared cuts; every
    real token lies inside exactly one span. A span is dropped when only one side has tokens in it
    (whitespace one tokenizer keeps and the other drops, text truncated on one side) or when the
    two sides' tokens in it end at different places (one side was truncated inside it); leading
    whitespace may differ (byte-level BPE tokens often start with the space before a word). The
    kept spans are numbered ``0..T-1`` per row, left to right.

    Special and padding tokens (``start == end`` or ``mask == 0``) belong to no span. Fully
    vectorised: per-character marks via ``scatter_add`` and ``cumsum``, no Python loop.

    Args:
        student_offsets: ``[B, L_s, 2]`` character spans of the student tokens.
        student_mask: ``[B, L_s]`` attention mask (1 = real token).
        teacher_offsets: ``[B, L_t, 2]``, ``teacher_mask``: ``[B, L_t]``, the same for the teacher.

    Returns:
        a :class:`SpanAlignment`; pool each side's ``[B, L, H]`` states with it.
    """
    so, to = student_offsets.long(), teacher_offsets.long().to(student_offsets.device)
    sv = student_mask.bool() & (so[..., 1] > so[..., 0])
    tv = teacher_mask.bool().to(sv.device) & (to[..., 1] > to[..., 0])
    b = so.shape[0]
    device = so.device
    # positions 0..width-1 cover every real token's end (padding offsets may be garbage)
    ends = [torch.where(v, o[..., 1], 0).max().item() for o, v in ((so, sv), (to, tv)) if v.numel()]
    width = int(max(ends, default=0)) + 1

    s_bound, s_inside = _side_marks(so, sv, width)
    t_bound, t_inside = _side_marks(to, tv, width)
    cut = (s_bound | t_bound) & ~s_inside & ~t_inside  # [B, width]
    raw_id = cut.long().cumsum(1) - 1  # span id of each position (before dropping)
    n_raw = int(cut.sum(1).max().item()) if b else 0
    n_raw = max(n_raw, 1)

    def raw_index(offsets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        idx = raw_id.gather(1, offsets[..., 0].clamp(0, width - 1))
        return torch.where(valid, idx, -1)

    s_raw, t_raw = raw_index(so, sv), raw_index(to, tv)

    def last_end(idx: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``[B, n_raw]`` the largest token end of one side in each raw span (-1: no token)."""
        slot = torch.where(idx >= 0, idx, n_raw)
        out = torch.full((b, n_raw + 1), -1, dtype=torch.long, device=device)
        return out.scatter_reduce_(1, slot, offsets[..., 1], reduce="amax")[:, :n_raw]

    # keep spans both sides reach to the same end: drops spans seen by one side only and the
    # partial last word of a side truncated inside a word (leading whitespace may differ)
    s_end, t_end = last_end(s_raw, so), last_end(t_raw, to)
    keep = (s_end >= 0) & (s_end == t_end)  # [B, n_raw]
    new_id = keep.long().cumsum(1) - 1
    num = max(int(keep.sum(1).max().item()) if b else 0, 1)

    def final_index(idx: torch.Tensor) -> torch.Tensor:
        safe = idx.clamp_min(0)
        kept = keep.gather(1, safe) & (idx >= 0)
        return torch.where(kept, new_id.gather(1, safe), -1)

    s_idx, t_idx = final_index(s_raw), final_index(t_raw)
    span_mask = torch.arange(num, device=device).unsqueeze(0) < keep.sum(1, keepdim=True)

    # span bounds: min start / max end over the tokens of both sides
    big = torch.iinfo(torch.long).max
    bounds_lo = torch.full((b, num + 1), big, dtype=torch.long, device=device)
    bounds_hi = torch.zeros(b, num + 1, dtype=torch.long, device=device)
    for idx, off in ((s_idx, so), (t_idx, to)):
        slot = torch.where(idx >= 0, idx, num)
        bounds_lo.scatter_reduce_(1, slot, off[..., 0], reduce="amin")
        bounds_hi.scatter_reduce_(1, slot, off[..., 1], reduce="amax")
    bounds = torch.stack([bounds_lo[:, :num], bounds_hi[:, :num]], -1)
    bounds = torch.where(span_mask.unsqueeze(-1), bounds, 0)
    return SpanAlignment(s_idx, t_idx, span_mask, bounds)


def align_outputs(
    student: ModelOutput, teacher: ModelOutput, where: str = "method"
) -> SpanAlignment:
    """:func:`align_spans` for two :class:`kdkit.api.ModelOutput` s, with a clear error if the
    offsets or masks needed for alignment are missing."""
    for side, out in (("student", student), ("teacher", teacher)):
        if out.offsets is None or out.attention_mask is None:
            raise KdkitError(
                f"the {side} output has no character offsets or attention mask, so its tokens "
                "cannot be aligned with the other model's",
                where=f"{where} ({side})",
                fix=f"use a {side} whose encode() returns offsets (a fast tokenizer), and a "
                "teacher cache that stores offsets",
            )
    s_off, s_mask, t_off, t_mask = (
        student.offsets,
        student.attention_mask,
        teacher.offsets,
        teacher.attention_mask,
    )
    assert s_off is not None and s_mask is not None and t_off is not None and t_mask is not None
    return align_spans(s_off, s_mask, t_off, t_mask)  # (checked in the loop above)


def stack_layers(
    states: dict[int, torch.Tensor], layers: Sequence[int], where: str
) -> torch.Tensor:
    """``{layer: [B, L, H]}`` -> ``[B, K, L, H]`` in the order of ``layers``; error if one is missing."""
    missing = [layer for layer in layers if layer not in states]
    if missing:
        raise KdkitError(
            f"layers {missing} were requested but not returned (got {sorted(states)})",
            where=where,
            fix="the model must return every layer listed in the method's requirements",
        )
    return torch.stack([states[layer] for layer in layers], dim=1)
