"""Conformance checks a plugin author calls in one line from a test.

Each ``check_*`` function raises ``AssertionError`` with a precise message on the first
violation and returns facts it measured (so a test can assert more)::

    from kdkit.testing import check_kd_method

    def test_my_method():
        check_kd_method("mymethod")                 # by registered name, or
        check_kd_method(MyMethod, MyOptions())      # by factory and options
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

import torch

from kdkit.api import (
    BuildContext,
    Encoded,
    KDMethod,
    ModelOutput,
    Needs,
    NoOptions,
    Options,
    Requirements,
    Student,
)
from kdkit.testing.tiny import TinyStudent, TinyTask, TinyTeacher, tiny_batch, tiny_examples


@dataclass
class MethodReport:
    """What :func:`check_kd_method` measured."""

    terms: dict[str, float]
    loss: float
    student_grad_norm: float
    method_params_with_grad: int


def _resolve(
    kind: str, factory: Any, options: Options | Mapping[str, Any] | None
) -> tuple[Callable[..., Any], Options, type[Options]]:
    """(factory, options) from a registered name or a factory plus options."""
    if isinstance(factory, str):
        from kdkit.discovery import load_plugins

        component = load_plugins().registry.get(kind, factory)
        opts = options if isinstance(options, Options) else component.options(dict(options or {}))
        return component.factory, opts, component.config
    if options is None:
        options = NoOptions()
    assert isinstance(options, Options), "pass options as an instance of your Options model"
    return factory, options, type(options)


def check_options_roundtrip(options: Options) -> None:
    """Options survive ``model_dump`` -> JSON -> model, and unknown keys are rejected."""
    cls = type(options)
    dumped = json.loads(json.dumps(options.model_dump(mode="json")))
    again = cls(**dumped)
    assert again == options, f"{cls.__name__} does not round-trip: {options!r} -> {again!r}"
    assert cls.model_config.get("extra") == "forbid", (
        f"{cls.__name__} must reject unknown keys: derive it from kdkit.api.Options"
    )
    try:
        cls(**dumped, definitely_not_an_option=1)  # type: ignore[call-arg]  # the point of the check
    except Exception:
        pass
    else:  # pragma: no cover - only reached by a broken model
        raise AssertionError(f"{cls.__name__} accepted an unknown option")


def check_hookimpls(module: ModuleType) -> list[str]:
    """Every hook implementation in ``module`` names a kdkit hook and has no default values.

    Returns the names of the hook implementations found.
    """
    from kdkit import hookspecs

    found = []
    for name, fn in vars(module).items():
        if not callable(fn) or not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            continue
        found.append(name)
        assert hasattr(hookspecs, name), (
            f"{module.__name__}.{name} is marked @hookimpl but kdkit has no hook '{name}' "
            f"(hooks: see kdkit.hookspecs)"
        )
        for param in inspect.signature(fn).parameters.values():
            assert param.default is inspect.Parameter.empty, (
                f"{module.__name__}.{name}: parameter '{param.name}' has a default value; "
                "pluggy treats such parameters differently across versions — remove the default"
            )
    assert found, f"{module.__name__} implements no kdkit hook"
    return found


def _method_context(teacher: TinyTeacher, student: Student, seed: int) -> BuildContext:
    return BuildContext(
        task=TinyTask(),
        teacher=teacher.info,
        student=student.info,
        seed=seed,
        kernel_impl="reference",
    )


def _run_method(
    factory: Callable[..., Any], options: Options, seed: int, n: int
) -> tuple[KDMethod, TinyStudent, TinyTeacher, dict[str, torch.Tensor]]:
    import kdkit.kernels as kernels

    torch.manual_seed(seed)
    teacher = TinyTeacher()
    student = TinyStudent()
    method = factory(options, _method_context(teacher, student, seed))
    assert isinstance(method, KDMethod), f"factory returned {type(method).__name__}, not a KDMethod"
    req = method.requirements
    assert isinstance(req, Requirements), "method.requirements must be a kdkit.api.Requirements"
    for side, needs, info in (
        ("student", req.student, student.info),
        ("teacher", req.teacher, teacher.info),
    ):
        if needs is None:
            continue
        for layer in (*needs.hidden_layers, *needs.pooled_layers):
            assert 0 <= layer <= info.num_layers, (
                f"method asks the {side} for layer {layer}, but it has layers 0..{info.num_layers}"
            )
    batch = tiny_batch(n, teacher=teacher, student=student)
    method.train()
    student.train()
    previous = kernels.get_default_impl()
    kernels.set_default_impl("reference")  # the contract: methods work with the references on CPU
    assert batch.teacher is not None  # tiny_batch encodes for the teacher it was given
    try:
        t_out = teacher(batch.teacher, req.teacher) if req.teacher is not None else None
        s_out = student(batch.student, req.student)
        terms = method(s_out, t_out, batch)
    finally:
        kernels.set_default_impl(previous)  # None clears it again
    return method, student, teacher, terms


def check_kd_method(
    factory: str | Callable[..., Any],
    options: Options | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    batch_size: int = 6,
) -> MethodReport:
    """Check a KD method against the contract, on CPU with the reference kernels.

    Verifies: the factory builds a :class:`KDMethod` with valid :class:`Requirements`; the loss
    terms are a non-empty dict of finite scalars; their sum is differentiable; gradients reach the
    student and every trainable parameter the method owns, and never the teacher; two builds under
    one seed give identical terms; the options round-trip.

    Args:
        factory: a registered method name, or the factory itself.
        options: an options instance (or a mapping, with a name) — defaults otherwise.
        seed: the seed for both runs of the determinism check.
        batch_size: rows of the tiny batch (real stdlib functions).
    """
    fn, opts, _ = _resolve("kd_method", factory, options)
    check_options_roundtrip(opts)
    method, student, teacher, terms = _run_method(fn, opts, seed, batch_size)
    assert isinstance(terms, dict) and terms, "forward must return a non-empty dict of loss terms"
    for name, value in terms.items():
        assert isinstance(name, str), f"loss term names must be strings, got {name!r}"
        assert isinstance(value, torch.Tensor) and value.dim() == 0, (
            f"loss term '{name}' must be a scalar tensor, got {getattr(value, 'shape', value)!r}"
        )
        assert torch.isfinite(value), f"loss term '{name}' is not finite: {value}"
    loss = cast(torch.Tensor, sum(terms.values()))  # a tensor: terms is not empty (asserted)
    assert loss.requires_grad, "the loss does not depend on the student (no gradient)"
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads, "no gradient reached the student"
    grad_norm = float(torch.sqrt(cast(torch.Tensor, sum((g.float() ** 2).sum() for g in grads))))
    assert grad_norm > 0 and torch.isfinite(torch.tensor(grad_norm)), (
        f"student gradient norm is {grad_norm}"
    )
    own = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    missing = [n for n, p in own if p.grad is None]
    assert not missing, f"method parameters received no gradient: {missing}"
    leaked = [
        n for n, p in teacher.model.named_parameters() if p.grad is not None or p.requires_grad
    ]
    assert not leaked, f"the teacher must stay frozen, but these have gradients: {leaked[:5]}"
    _, _, _, again = _run_method(fn, opts, seed, batch_size)
    for name in terms:
        assert name in again and torch.equal(terms[name].detach(), again[name].detach()), (
            f"loss term '{name}' differs between two runs with seed {seed}: "
            f"{float(terms[name].detach())} vs {float(again[name].detach()) if name in again else None}"
        )
    return MethodReport(
        {k: float(v.detach()) for k, v in terms.items()}, float(loss.detach()), grad_norm, len(own)
    )


def check_task(task: Any, *, min_rows: int = 1) -> dict[str, int]:
    """Check a task: three splits with the contract's columns, labels in range, metrics.

    Returns the number of rows per split.
    """
    import datasets

    for attr in ("name", "labels", "headline_metric", "is_pair"):
        assert hasattr(task, attr), f"task lacks attribute '{attr}'"
    data = task.load()
    assert isinstance(data, datasets.DatasetDict), "load() must return a datasets.DatasetDict"
    sizes = {}
    for split in ("train", "validation", "test"):
        assert split in data, f"split '{split}' is missing (have: {list(data)})"
        ds = data[split]
        needed = {"text", "label"} | ({"text_pair"} if task.is_pair else set())
        assert needed <= set(ds.column_names), (
            f"{split} lacks columns {needed - set(ds.column_names)}"
        )
        assert len(ds) >= min_rows, f"{split} has {len(ds)} rows (< {min_rows})"
        labels = ds["label"]
        bad = [y for y in labels if not 0 <= int(y) < len(task.labels)]
        assert not bad, f"{split} has labels outside 0..{len(task.labels) - 1}: {bad[:5]}"
        sizes[split] = len(ds)
    fp1, fp2 = task.fingerprint(), task.fingerprint()
    assert isinstance(fp1, str) and fp1 == fp2, "fingerprint() must be a stable string"
    n = min(8, sizes["test"])
    labels = torch.tensor(data["test"]["label"][:n])
    perfect = torch.nn.functional.one_hot(labels, len(task.labels)).float()
    metrics = task.evaluate(perfect, labels)
    assert task.headline_metric in metrics, (
        f"evaluate() must return the headline metric '{task.headline_metric}', got {list(metrics)}"
    )
    assert abs(metrics[task.headline_metric] - 1.0) < 1e-9, (
        f"perfect predictions must score 1.0 on '{task.headline_metric}', got {metrics}"
    )
    return sizes


def _check_output(out: ModelOutput, enc: Encoded, needs: Needs, num_labels: int, who: str) -> None:
    b = enc.input_ids.shape[0]
    assert out.logits.shape == (b, num_labels), (
        f"{who} logits {tuple(out.logits.shape)} != {(b, num_labels)}"
    )
    for layer in needs.hidden_layers:
        assert layer in out.hidden_states, f"{who} did not return hidden layer {layer}"
        h = out.hidden_states[layer]
        assert h.shape[:2] == enc.input_ids.shape, (
            f"{who} hidden layer {layer} shape {tuple(h.shape)}"
        )
    for layer in needs.pooled_layers:
        assert layer in out.pooled and out.pooled[layer].shape[0] == b, (
            f"{who} pooled layer {layer}"
        )
    if needs.embedding:
        assert out.embedding is not None and out.embedding.shape[0] == b, f"{who} embedding"
    assert out.offsets is not None and out.attention_mask is not None, (
        f"{who} must return attention_mask and offsets (methods align tokens with them)"
    )


def _all_needs(num_layers: int) -> Needs:
    return Needs(True, tuple(range(num_layers + 1)), tuple(range(1, num_layers + 1)), True)


def check_teacher(teacher: Any, num_labels: int, *, max_length: int = 64) -> None:
    """Check a teacher: offsets are real spans, outputs have the right shapes, nothing trains."""
    codes = [c for c, _ in tiny_examples(4)]
    enc = teacher.encode(codes, max_length)
    _check_offsets(enc, codes, "teacher")
    needs = _all_needs(teacher.info.num_layers)
    out = teacher(enc, needs)
    _check_output(out, enc, needs, num_labels, "teacher")
    tensors = [out.logits, *out.hidden_states.values(), *out.pooled.values()]
    assert not any(t.requires_grad for t in tensors), "teacher outputs must be detached"
    again = teacher(enc, needs)
    assert torch.equal(out.logits, again.logits), "teacher is not deterministic (dropout on?)"
    assert teacher.fingerprint() == teacher.fingerprint(), "fingerprint() must be stable"


def check_student(student: Student, num_labels: int, *, max_length: int = 64) -> None:
    """Check a student: offsets, output shapes for every layer, gradients reach all parameters."""
    codes = [c for c, _ in tiny_examples(4)]
    enc = student.encode(codes, max_length)
    _check_offsets(enc, codes, "student")
    needs = _all_needs(student.info.num_layers)
    student.train()
    out = student(enc, needs)
    _check_output(out, enc, needs, num_labels, "student")
    out.logits.sum().backward()
    n_params = sum(p.numel() for p in student.parameters())
    assert n_params == student.info.num_parameters, (
        f"info.num_parameters={student.info.num_parameters} but the model has {n_params}"
    )


def _check_offsets(enc: Encoded, codes: list[str], who: str) -> None:
    assert enc.offsets.shape == (*enc.input_ids.shape, 2), (
        f"{who} offsets shape {tuple(enc.offsets.shape)}"
    )
    for b, code in enumerate(codes):
        real = enc.attention_mask[b].bool() & (enc.offsets[b, :, 1] > enc.offsets[b, :, 0])
        spans = enc.offsets[b][real]
        assert len(spans) > 0, f"{who}: row {b} has no token with a character span"
        assert int(spans.max()) <= len(code), f"{who}: offsets past the end of the text in row {b}"
        starts = spans[:, 0]
        assert bool((starts[1:] >= starts[:-1]).all()), f"{who}: offsets of row {b} are not ordered"
