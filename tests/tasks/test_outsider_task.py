"""A third-party task package with its own offline builder (the example of docs/tasks.md),
installed with pip, is built by `kdkit data build <its task>` (flags generated from its options
model) and trains through the ordinary task path (its default `source` is built through the same
contract)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kdkit.data.corpus import stdlib_sample
from tests.outsider import pip_install

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kdkit-returns"
version = "0.1.0"
dependencies = ["kdkit"]

[project.entry-points.kdkit]
returns = "kdkit_returns"
"""

ROOT = Path(__file__).resolve().parents[2]


def docs_example() -> str:
    """The third-party task of docs/tasks.md ("Shipping an offline builder"), verbatim."""
    text = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
    after = text.split("A complete third-party task with a builder", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


RUN = """\
seed: 0
output_dir: {out}
task: {{name: returns, source: [{src}], max_lines: 12, max_train: 64, max_eval: 32}}
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: ft
training: {{epochs: 1, batch_size: 16, max_length: 64, device: cpu}}
reporters: [jsonl]
"""


def test_outsider_task_builds_with_kdkit_data_build_and_trains(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "kdkit_returns.py").write_text(docs_example())  # the docs' example is what runs
    target = tmp_path / "site"
    pip_install(pkg, target)
    src = tmp_path / "src"
    src.mkdir()
    for path in stdlib_sample(("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py")):
        shutil.copy(path, src / path.name)
    env = {
        **os.environ,
        "KDKIT_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }

    def kdkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "kdkit", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    listed = kdkit("data", "build", "--help")
    assert listed.returncode == 0 and "returns" in listed.stdout, listed.stderr
    helped = kdkit("data", "build", "returns", "--help")
    assert helped.returncode == 0, helped.stderr
    flat = " ".join(helped.stdout.split())
    assert "--max-lines N skip functions longer than this (lines) (default: 25)" in flat
    assert "--near-miss-share" not in flat  # only the task's own builder options

    out = tmp_path / "built"
    built = kdkit(
        "data",
        "build",
        "returns",
        "--from",
        str(src),
        "--out",
        str(out),
        "--max-lines",
        "12",
        "--json",
        "--quiet",
    )
    assert built.returncode == 0, built.stderr
    stats = json.loads(built.stdout)
    assert stats["task"] == "returns" and stats["options"] == {"max_lines": 12, "seed": 0}
    rows = {
        n: [json.loads(x) for x in (out / f"{n}.jsonl").open()] for n in ("train", "valid", "test")
    }
    assert sum(stats["sizes"].values()) == sum(map(len, rows.values())) >= 10
    assert all(len(r["code"].splitlines()) <= 12 for rs in rows.values() for r in rs)
    assert {r["label"] for r in rows["train"]} == {0, 1}

    # The ordinary path: a run on the task's default source builds it through build_offline.
    run_file = tmp_path / "run.yaml"
    run_file.write_text(RUN.format(out=tmp_path / "runs", src=src))
    ran = kdkit("run", str(run_file), "--quiet")
    assert ran.returncode == 0, ran.stderr[-3000:]
    (built_dir,) = (tmp_path / "cache" / "built").iterdir()
    assert built_dir.name.startswith("returns-")
    assert json.loads((built_dir / "stats.json").read_text())["options"]["max_lines"] == 12
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert (summary["status"], summary["task"], summary["headline_metric"]) == (
        "finished",
        "returns",
        "accuracy",
    )
    assert summary["steps"] == 64 // 16  # max_train rows of the built train split, one epoch
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
