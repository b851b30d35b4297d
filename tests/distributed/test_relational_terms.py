"""Batch-relational terms under DDP (2 CPU processes, gloo) equal the one-process terms.

Contrastive (InfoNCE over in-batch negatives), RKD (distances and angles) and DIST (its
intra-class, per-class correlation term) relate the rows of a batch to each other; each rank
gathers every rank's rows with gradients (``global_rows``), so loss and gradients are the
one-process ones, also for an uneven split (7 rows over 2 ranks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.distributed.conftest import torchrun
from tests.distributed.relational_cases import CASES, ROWS, run

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both ranks' results of one 2-process launch."""
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("relational")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    proc = torchrun(str(HERE / "relational_worker.py"), str(out), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]


@pytest.mark.parametrize("name", CASES)
def test_two_process_loss_and_gradients_equal_one_process(two_ranks, name):
    ref = run(name)  # one process, the whole batch
    rows = [two_ranks[r][f"{name}.rows"].tolist() for r in range(2)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6]]  # uneven shares, in rank order
    for r in range(2):  # every rank sees the global batch's term
        assert float(two_ranks[r][f"{name}.loss"]) == pytest.approx(ref["loss"], rel=1e-12)
    # what reaches the student through each row, after DDP's average over 2 ranks
    for kind in ("emb_grad", "logit_grad"):
        got = torch.cat([two_ranks[r][f"{name}.{kind}"] for r in range(2)]) / 2
        torch.testing.assert_close(got, ref[kind], rtol=1e-10, atol=1e-12)
    for p, g in ref["params"].items():  # the method's own projections (contrastive)
        torch.testing.assert_close(two_ranks[0][f"{name}.param.{p}"], g, rtol=1e-10, atol=1e-12)
    assert ref["loss"] > 0 and ROWS == 7


def test_local_rows_alone_would_differ(two_ranks):
    """The check can fail: each rank's share alone gives another contrastive loss."""
    local = run("contrastive", 0, 2)  # no process group: global_rows is the identity
    assert abs(local["loss"] - run("contrastive")["loss"]) > 1e-3
