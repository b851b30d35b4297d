"""Feature methods with kdkit's real students (own byte-level BPE; Transformer and packed BiGRU)
against a teacher that tokenises into words: different tokenizers, padding on both sides."""

from __future__ import annotations

import pytest
import torch

from kdkit import kernels
from kdkit.api import BuildContext
from kdkit.discovery import load_plugins
from kdkit.features import align_outputs
from kdkit.testing import TinyTask, TinyTeacher, tiny_batch


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    from kdkit.plugins.students import gru, transformer

    task = TinyTask()
    ctx = BuildContext(
        task=task,
        splits=task.load(),
        max_length=96,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    torch.manual_seed(0)
    return {
        "gru": gru.build_gru_student(
            gru.GRUOptions(size="0.6M", hidden_size=16, vocab_size=300), ctx
        ),
        "transformer": transformer.build_transformer_student(
            transformer.TransformerOptions(
                size="0.6M", hidden_size=32, num_heads=2, num_layers=4, vocab_size=300
            ),
            ctx,
        ),
    }


@pytest.mark.parametrize("family", ["gru", "transformer"])
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("ckd", {"window": 4}),
        ("pkd", {}),
        ("fitnets", {"features": "tokens"}),
        ("rkd", {}),
        ("contrastive", {}),
    ],
)
def test_method_trains_a_real_student(students, family, name, options):
    student = students[family]
    teacher = TinyTeacher(layers=6)
    registry = load_plugins().registry
    component = registry.get("kd_method", name)
    ctx = BuildContext(task=TinyTask(), teacher=teacher.info, student=student.info)
    method = component.build(component.options(options), ctx)
    batch = tiny_batch(6, teacher=teacher, student=student, max_length=96)
    assert not torch.equal(batch.student.offsets[:, :8], batch.teacher.offsets[:, :8])  # differ
    kernels.set_default_impl("reference")
    try:
        s_out = student(batch.student, method.requirements.student)
        t_out = teacher(batch.teacher, method.requirements.teacher)
        terms = method(s_out, t_out, batch)
    finally:
        kernels.set_default_impl(None)
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    student.zero_grad()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    if name == "ckd":
        al = align_outputs(s_out, t_out)
        real = al.span_mask.sum(1)
        # BPE pieces and words share most boundaries: most words both sides reached (the
        # student's small vocabulary makes it run out of tokens first) are spans of their own
        s_end = (batch.student.offsets[..., 1] * batch.student.attention_mask).amax(1)
        t_end = batch.teacher.offsets[..., 1]
        words = ((t_end > batch.teacher.offsets[..., 0]) & (t_end <= s_end[:, None])).sum(1)
        assert ((real.float() / words.float()) > 0.6).all(), (real, words)
        assert (real <= words).all()
        assert terms["wr"] > 0 and terms["ltr"] > 0
