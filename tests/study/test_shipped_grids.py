"""The grids shipped in configs/study/ validate against the installed plugins and have the
shape docs/reproduction.md describes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kdkit.discovery import load_plugins
from kdkit.study.grid import load_grid
from kdkit.study.resolve import plan

GRIDS = Path(__file__).resolve().parents[2] / "configs" / "study"


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


@pytest.mark.parametrize("name", sorted(p.name for p in GRIDS.glob("*.yaml")))
def test_shipped_grid_validates(name, registry, tmp_path):
    runs = plan(load_grid(GRIDS / name, tmp_path / "study"), registry)
    assert runs and len({r.run_id for r in runs}) == len(runs)


def test_offline_grid_shape(registry, tmp_path):
    """docs/reproduction.md §5: 84 runs; the study's five methods (CKD only where the teacher is
    strongest), the contrastive method, MiniLM and the GRU on the exception task; defect and
    clone (teachers at chance) with the 0.06M student only."""
    grid = load_grid(GRIDS / "offline.yaml", tmp_path / "study")
    runs = plan(grid, registry)
    labels = [r.point.labels() for r in runs]
    assert len(runs) == 84 and grid.workers == 2
    assert Counter(lab["task"] for lab in labels) == {"exception": 60, "defect": 12, "clone": 12}
    assert {lab["student"] for lab in labels if lab["task"] != "exception"} == {"transformer-0.06M"}
    assert {lab["teacher"] for lab in labels} == {"code-teacher", "minilm", "none"}
    assert {lab["student"] for lab in labels} == {
        "gru-0.25M",
        "transformer-0.06M",
        "transformer-0.25M",
    }
    methods = Counter(lab["method"] for lab in labels)
    assert set(methods) == {"ft", "kd-study", "dist", "pkd", "ckd", "contrastive"}
    assert methods["ckd"] == 3 and methods["contrastive"] == 6
    assert {lab["seed"] for lab in labels} == {"0", "1", "2"}
    for run in runs:  # one thread per run: results are bit-stable and two workers share 2 cores
        assert run.resolved.run.training.num_threads == 1
        assert run.resolved.run.training.epochs == 5
        comps = run.resolved.components
        assert comps["task"].options.holdout is not False  # pre-training never saw val/test
        if "teacher" in comps and comps["teacher"].component.name == "minilm":
            assert comps["teacher"].options.training.epochs == 2  # not minilm's default 5
        if comps["method"].component.name == "pkd":
            assert comps["method"].options.exclude_last is False  # 1-layer students
