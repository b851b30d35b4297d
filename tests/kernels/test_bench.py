"""The benchmark harness: registration, correctness gate, outputs, CLI."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from kdkit.bench import BenchOp, Provider, load_ops
from kdkit.bench.report import format_table, write_outputs
from kdkit.bench.runner import run_bench
from kdkit.kernels.kd.reference import kd_loss_reference


def test_builtin_ops_are_registered():
    ops = load_ops()
    assert {"kd_loss", "dist_loss", "infonce_loss", "ckd_loss"} <= set(ops)
    for op in ops.values():
        names = [p.name for p in op.providers]
        assert {"kdkit-triton", "reference", "torch-compile"} <= set(names)
        assert op.shapes["priority"] and op.shapes["quick"]


def test_gate_rejects_a_wrong_provider_and_times_the_right_ones(tmp_path):
    base = load_ops()["kd_loss"]
    wrong = Provider("wrong", lambda **kw: kd_loss_reference(**kw) * 1.01)
    op = BenchOp(
        **{
            **base.__dict__,
            "providers": [base.providers[0], base.providers[1], wrong],
            "shapes": {"quick": [{"n": 16, "c": 20}]},
        }
    )
    env, rows = run_bench([op], torch.device("cpu"), shapes="quick", quick=True, log=lambda m: None)
    by = {(r["provider"], r["mode"]): r for r in rows}
    assert (
        by[("wrong", "fwd")]["status"] == "FAILED"
        and "correctness gate" in by[("wrong", "fwd")]["reason"]
    )
    ref = by[("reference", "fwd+bwd")]
    assert ref["status"] == "ok" and ref["median_ms"] > 0 and ref["vs_reference"] == 1.0
    assert ref["bytes_min"] == 16 * 20 * 4 * 3 and ref["grad_err"] < 1e-5
    tri = by[("kdkit-triton", "fwd+bwd")]  # runs: the tests set TRITON_INTERPRET=1
    assert tri["status"] == "ok" and tri["vs_reference"] is not None
    paths = write_outputs(str(tmp_path), env, rows, plots=True)
    assert any(p.endswith(".png") for p in paths)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["environment"]["torch"] == torch.__version__ and len(data["rows"]) == len(rows)
    assert (tmp_path / "results.csv").read_text().count("\n") == len(rows) + 1
    table = format_table(env, rows)
    assert "FAILED" in table and "kdkit-triton" in table
    assert "liger: skipped" in table or "liger" not in [p.name for p in op.providers]


def test_cli_parser_and_unknown_op(capsys):
    from kdkit.cli import bench
    from kdkit.errors import KdkitError

    parser = argparse.ArgumentParser(prog="kdkit")
    bench.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--help"])
    assert "--shapes" in capsys.readouterr().out
    args = parser.parse_args(["bench", "--device", "cpu", "--ops", "kd_los"])
    with pytest.raises(KdkitError, match="kd_loss"):
        args.func(args)


def test_cli_check_only_runs(tmp_path):
    from kdkit.cli import bench

    parser = argparse.ArgumentParser(prog="kdkit")
    bench.add_parser(parser.add_subparsers())
    out = os.path.join(tmp_path, "o")
    args = parser.parse_args(
        [
            "bench",
            "--device",
            "cpu",
            "--quick",
            "--check-only",
            "--ops",
            "dist_loss",
            "--providers",
            "reference",
            "--out",
            out,
        ]
    )
    assert args.func(args) == 0
    rows = json.loads(open(os.path.join(out, "results.json")).read())["rows"]
    assert rows and all(r["status"] == "ok" and r["loss_err"] < 1e-5 for r in rows)
