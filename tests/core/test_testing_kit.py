"""The conformance kit itself: it passes a correct method and catches broken ones."""

from __future__ import annotations

import pytest
from torch import nn

from kdkit.api import KDMethod, NoOptions, Options, Requirements
from kdkit.testing import TinyTask, check_kd_method, check_student, check_task, check_teacher
from kdkit.testing.tiny import TinyStudent, TinyTeacher, tiny_examples


class _Temp(Options):
    temperature: float = 2.0


class _GoodMethod(KDMethod):
    """Soft cross-entropy plus a projection of pooled features (exercises own parameters)."""

    def __init__(self, options, context):
        super().__init__()
        self.t = options.temperature
        self.proj = nn.Linear(context.student.hidden_size, context.teacher.hidden_size)
        from kdkit.api import Needs

        self.requirements = Requirements(Needs(pooled_layers=(1,)), Needs(pooled_layers=(2,)))

    def forward(self, student, teacher, batch):
        soft = -(
            teacher.logits.div(self.t).softmax(-1) * student.logits.div(self.t).log_softmax(-1)
        )
        hint = (self.proj(student.pooled[1]) - teacher.pooled[2]).pow(2).mean()
        return {"kd": soft.sum(-1).mean(), "hint": hint}


def test_good_method_passes_and_reports_values():
    report = check_kd_method(_GoodMethod, _Temp())
    assert set(report.terms) == {"kd", "hint"}
    assert report.loss == pytest.approx(sum(report.terms.values()), rel=1e-6)
    # soft CE against a 3-class teacher is at least the teacher's entropy > 0, at most large
    assert 0 < report.terms["kd"] < 10
    assert report.method_params_with_grad == 2  # weight and bias of the projection


class _NaNMethod(_GoodMethod):
    """Adds a term that is NaN (as a diverged or buggy loss would be)."""

    def forward(self, student, teacher, batch):
        terms = super().forward(student, teacher, batch)
        terms["bad"] = (self.proj.weight * float("nan")).sum()
        return terms


def test_non_finite_term_is_caught():
    with pytest.raises(AssertionError, match="'bad' is not finite"):
        check_kd_method(_NaNMethod, _Temp())


class _Unused(_GoodMethod):
    def __init__(self, options, context):
        super().__init__(options, context)
        self.unused = nn.Linear(2, 2)


def test_parameters_without_gradient_are_caught():
    with pytest.raises(AssertionError, match="unused"):
        check_kd_method(_Unused, _Temp())


def test_nondeterminism_is_caught():
    # seeded identically, torch.rand would repeat itself: depend on a global call count instead
    calls = iter(range(100))

    class Counting(_GoodMethod):
        def forward(self, student, teacher, batch):
            terms = super().forward(student, teacher, batch)
            terms["noise"] = student.logits.sum() * 0 + float(next(calls))
            return terms

    with pytest.raises(AssertionError, match="differs between two runs"):
        check_kd_method(Counting, _Temp())


def test_no_options_method_and_tiny_components_pass():
    class FT(KDMethod):
        requirements = Requirements(teacher=None)

        def __init__(self, options, context):
            super().__init__()

        def forward(self, student, teacher, batch):
            assert teacher is None
            return {"ce": nn.functional.cross_entropy(student.logits, batch.labels)}

    report = check_kd_method(FT, NoOptions())
    # an untrained 3-class model: CE near log(3) = 1.10, certainly not ~0 or huge
    assert 0.5 < report.terms["ce"] < 3.0
    sizes = check_task(TinyTask())
    assert sizes == {"train": 32, "validation": 8, "test": 8}
    check_teacher(TinyTeacher(), 3)
    check_student(TinyStudent(), 3)


def test_tiny_data_is_real_and_balanced():
    examples = tiny_examples()
    assert len(examples) == 48
    assert all(code.startswith("def ") for code, _ in examples)
    counts = [sum(1 for _, y in examples if y == k) for k in range(3)]
    assert min(counts) >= 10, counts
