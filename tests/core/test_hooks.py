"""One test per hook of kdkit.hookspecs, each through the plugin manager with an in-test plugin
(tests/meta/test_hooks_have_tests.py checks that every hook has its ``test_hook_<name>``)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from kdkit import hookimpl
from kdkit.api import KDMethod, Needs, NoOptions, Options, Reporter, Requirements
from kdkit.bench import BenchOp, Provider, load_ops
from kdkit.discovery import load_plugins
from kdkit.testing import TinyStudent, TinyTask, TinyTeacher, check_bench_op


class SumOptions(Options):
    scale: float = 2.0


class ZeroMethod(KDMethod):
    def __init__(self, options, context):
        super().__init__()
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student, teacher, batch):
        return {"zero": 0.0 * student.logits.sum()}


def _square_op(options, context) -> BenchOp:
    """sum(scale * x^2): a bench op small enough to check by hand."""

    def make_inputs(p, dtype, device, requires_grad):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(p["n"], generator=g).to(dtype=dtype, device=device)
        return {"x": x.requires_grad_(requires_grad), "scale": options.scale}

    def square(x, scale):
        return (scale * x * x).sum()

    return BenchOp(
        name="square",
        description="scale * x^2",
        make_inputs=make_inputs,
        grad_inputs=("x",),
        reference=square,
        providers=[Provider("reference", square)],
        shapes={"quick": [{"n": 8}]},
        bytes_min=lambda p, d, m: 4 * p["n"],
    )


class AllKinds:
    """An in-test plugin registering one component of every kind."""

    @hookimpl
    def register_tasks(self, register):
        register("t-tiny", lambda o, c: TinyTask(), description="tiny task")

    @hookimpl
    def register_teachers(self, register):
        register("t-teacher", lambda o, c: TinyTeacher(), description="tiny teacher")

    @hookimpl
    def register_students(self, register):
        register("t-student", lambda o, c: TinyStudent(), description="tiny student")

    @hookimpl
    def register_kd_methods(self, register):
        register("t-zero", ZeroMethod, description="zero loss")

    @hookimpl
    def register_reporters(self, register):
        register("t-silent", lambda o, c: Reporter(), config=NoOptions, description="silent")

    @hookimpl
    def register_bench_ops(self, register):
        register("square", _square_op, config=SumOptions, description="scale * x^2")


@pytest.fixture(scope="module")
def all_kinds():
    return load_plugins(allow=[], extra=[("all-kinds", AllKinds())])


def _built(plugins, kind, name):
    component = plugins.registry.get(kind, name)
    assert (component.origin.plugin, component.origin.distribution) == ("all-kinds", "<in-process>")
    return component.build(component.options(), None)


def test_hook_register_tasks(all_kinds):
    task = _built(all_kinds, "task", "t-tiny")
    assert task.name == "tiny" and len(task.load()["train"]) == 32


def test_hook_register_teachers(all_kinds):
    assert _built(all_kinds, "teacher", "t-teacher").info.num_layers == 4


def test_hook_register_students(all_kinds):
    assert _built(all_kinds, "student", "t-student").info.num_layers == 2


def test_hook_register_kd_methods(all_kinds):
    method = _built(all_kinds, "kd_method", "t-zero")
    assert isinstance(method, ZeroMethod) and method.requirements.teacher is None


def test_hook_register_reporters(all_kinds):
    assert type(_built(all_kinds, "reporter", "t-silent")) is Reporter


def test_hook_register_bench_ops(all_kinds, capsys):
    (op,) = load_ops(all_kinds).values()
    report = check_bench_op(op)
    x = op.make_inputs({"n": 8}, torch.float64, torch.device("cpu"), False)["x"]
    assert report.reference_loss == pytest.approx(2.0 * float((x * x).sum()))
    assert capsys.readouterr().err == ""

    class Broken:
        @hookimpl
        def register_bench_ops(self, register):
            raise RuntimeError("bench hook broken on purpose")

    broken = load_plugins(allow=[], extra=[("broken-bench", Broken()), ("all-kinds", AllKinds())])
    assert list(load_ops(broken)) == ["square"]  # the broken plugin is reported, not hidden
    err = capsys.readouterr().err
    assert "plugin 'broken-bench' (<in-process>) failed to load" in err
    assert "RuntimeError: bench hook broken on purpose" in err


# ---------------------------------------------------------------------------- lifecycle hooks


class Recorder:
    """Records every lifecycle event of the runs it observes."""

    def __init__(self):
        self.events = []

    @hookimpl
    def on_run_start(self, run):
        self.events.append(("start", run))

    @hookimpl
    def on_step_end(self, run, step, record):
        self.events.append(("step", step, dict(record)))

    @hookimpl
    def on_eval_end(self, step, split, metrics):  # fewer parameters than the spec is allowed
        self.events.append(("eval", step, split, dict(metrics)))

    @hookimpl
    def on_run_end(self, run, summary):
        self.events.append(("end", run, summary))


class Faulty:
    @hookimpl
    def on_step_end(self, step):
        raise ValueError(f"observer bug at step {step}")


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory):
    """One real tiny run (GRU student, tiny teacher, KD, 1 epoch = 4 steps) with observers."""
    from kdkit.engine.runner import run_once
    from tests.engine import tinyplug
    from tests.engine.conftest import tiny_config

    recorder = Recorder()
    plugins = load_plugins(
        distributions={"kdkit"},
        extra=[("tiny-test", tinyplug), ("recorder", recorder), ("faulty", Faulty())],
    )
    run_dir = tmp_path_factory.mktemp("observed") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = run_once(
            tiny_config(plugins, run_dir, "training.epochs=1"), plugins, progress=False
        )
    return recorder.events, summary, run_dir, err.getvalue()


def test_hook_on_run_start(observed_run):
    events, _, run_dir, _ = observed_run
    kind, run = events[0]
    assert kind == "start" and [e[0] for e in events].count("start") == 1
    assert (run.run_dir, run.total_steps, run.components["method"]) == (str(run_dir), 4, "kd")
    assert run.config["method"]["temperature"] == 2


def test_hook_on_step_end(observed_run):
    events, summary, _, err = observed_run
    steps = [e for e in events if e[0] == "step"]
    assert [s[1] for s in steps] == [1, 2, 3, 4] == list(range(1, summary["steps"] + 1))
    for _, _, record in steps:
        assert math.isfinite(record["loss"]) and record["loss"] == pytest.approx(
            record["kd"] + record["ce"], rel=1e-5
        )
    # the faulty observer raised at every step: reported each time, and the run went on
    warnings = [
        line for line in err.splitlines() if "plugin 'faulty' raised in on_step_end" in line
    ]
    assert len(warnings) == 4 and warnings[-1].endswith("ValueError: observer bug at step 4")


def test_hook_on_eval_end(observed_run):
    events, summary, _, _ = observed_run
    evals = [e for e in events if e[0] == "eval"]
    assert [(e[1], e[2]) for e in evals] == [(4, "validation")]
    assert evals[0][3]["accuracy"] == pytest.approx(summary["best_validation"]["accuracy"])


def test_hook_on_run_end(observed_run):
    events, summary, run_dir, _ = observed_run
    kind, run, seen = events[-1]
    assert kind == "end" and seen is summary and seen["status"] == "finished"
    assert json.loads((run_dir / "summary.json").read_text())["test"] == summary["test"]
