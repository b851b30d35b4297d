"""Two optimisation steps of every method on the tiny CPU models, against stored golden losses.

The golden values are a regression guard: any change to a method's maths, its defaults, the
alignment or the kernels it calls moves them. After an *intended* change, regenerate with::

    KDKIT_UPDATE_GOLDEN=1 python -m pytest tests/methods/test_golden.py

and say in the commit message why the numbers moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kdkit import kernels
from kdkit.api import BuildContext
from kdkit.discovery import load_plugins
from kdkit.testing import TinyStudent, TinyTask, TinyTeacher, tiny_batch

GOLDEN = Path(__file__).with_name("golden_two_step.json")
METHODS = ["ft", "kd", "kd-study", "dist", "pkd", "ckd", "fitnets", "rkd", "contrastive"]


def two_steps(name: str, registry) -> list[dict[str, float]]:
    """Build everything under seed 0, run two AdamW steps, return each step's loss terms."""
    component = registry.get("kd_method", name)
    torch.manual_seed(0)
    teacher, student = TinyTeacher(), TinyStudent()
    context = BuildContext(
        task=TinyTask(), teacher=teacher.info, student=student.info, kernel_impl="reference"
    )
    method = component.build(component.options({}), context)
    params = [*student.parameters(), *method.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    req = method.requirements
    records = []
    kernels.set_default_impl("reference")
    try:
        for step in range(2):
            batch = tiny_batch(8, teacher=teacher, student=student, offset=8 * step)
            t_out = teacher(batch.teacher, req.teacher) if req.teacher is not None else None
            terms = method(student(batch.student, req.student), t_out, batch)
            loss = sum(terms.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            records.append(
                {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach())}
            )
    finally:
        kernels.set_default_impl(None)
    return records


@pytest.fixture(scope="module")
def results():
    registry = load_plugins().registry
    out = {name: two_steps(name, registry) for name in METHODS}
    if os.environ.get("KDKIT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return out


@pytest.mark.parametrize("name", METHODS)
def test_two_steps_match_golden(results, name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = results[name]
    assert [sorted(r) for r in got] == [sorted(r) for r in golden]
    for step, (g, r) in enumerate(zip(golden, got)):
        for term, value in g.items():
            assert r[term] == pytest.approx(value, rel=2e-4, abs=1e-6), (name, step, term)
    # the second step's batch differs, so the loss is not a repeat of the first
    assert got[0]["loss"] != got[1]["loss"]
