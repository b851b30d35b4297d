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
    grid = load_grid(GRIDS / "offline.yaml", tmp_path / "study")
    runs = plan(grid, registry)
    labels = [r.point.labels() for r in runs]
    assert len(runs) == 288 and grid.workers == 2
    assert Counter(lab["task"] for lab in labels) == {"exception": 96, "defect": 96, "clone": 96}
    assert {lab["student"] for lab in labels} == {
        "gru-0.06M",
        "gru-0.25M",
        "transformer-0.06M",
        "transformer-0.25M",
    }
    assert {lab["method"] for lab in labels} == {
        "ft",
        "kd-study",
        "dist",
        "pkd",
        "ckd",
        "fitnets",
        "rkd",
        "contrastive",
    }
    assert {lab["seed"] for lab in labels} == {"0", "1", "2"}
    for run in runs:  # one thread per run: results are bit-stable and two workers share 2 cores
        assert run.resolved.run.training.num_threads == 1
        assert run.resolved.run.training.epochs == 5
