"""The conformance kit itself: it passes a correct method and catches broken ones."""

from __future__ import annotations

from dataclasses import replace

import pytest
from torch import nn

from kdkit.api import KDMethod, NoOptions, Options, Reporter, Requirements
from kdkit.testing import (
    TinyTask,
    check_bench_op,
    check_kd_method,
    check_reporter,
    check_student,
    check_task,
    check_teacher,
)
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


class _Mutating(Reporter):
    def step(self, run, step, record):
        record["loss"] = 0.0  # a reporter must only observe


class _Stray(Reporter):
    def __init__(self, where):
        self.where = where

    def start(self, run):
        (self.where / "stray.txt").write_text("outside the run directory")


def test_check_reporter_catches_mutation_and_stray_files(tmp_path):
    with pytest.raises(TypeError):  # the record is read-only
        check_reporter(lambda o, c: _Mutating(), run_dir=tmp_path / "run")
    with pytest.raises(AssertionError, match="wrote outside the run directory"):
        check_reporter(lambda o, c: _Stray(tmp_path), run_dir=tmp_path / "run2")
    with pytest.raises(AssertionError, match="not a kdkit.api.Reporter"):
        check_reporter(lambda o, c: object(), run_dir=tmp_path / "run3")


def test_check_bench_op_catches_a_wrong_provider_and_a_bad_shape_list():
    from kdkit.bench import Provider, load_ops
    from kdkit.kernels.kd.reference import kd_loss_reference

    base = load_ops()["kd_loss"]
    report = check_bench_op(base)
    assert report.checked == ["reference"] and report.params == {"n": 64, "c": 20}
    wrong = Provider("wrong", lambda **kw: kd_loss_reference(**kw) * 1.01)
    with pytest.raises(AssertionError, match="provider 'wrong' fails the correctness gate"):
        check_bench_op(replace(base, providers=[*base.providers, wrong]))
    with pytest.raises(AssertionError, match="non-empty 'quick' list"):
        check_bench_op(replace(base, shapes={"priority": base.shapes["priority"]}))
    with pytest.raises(AssertionError, match="must be unique"):
        check_bench_op(replace(base, providers=[base.providers[0], base.providers[0]]))
