"""A third-party task package with its own offline builder, installed with pip, is built by
`kdkit data build <its task>` (flags generated from its options model) and trains through the
ordinary task path (its default `source` is built through the same contract)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from kdkit.data.corpus import stdlib_sample

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

MODULE = '''
"""Does a function return a value? A third-party task with an offline builder."""
import ast
from collections import Counter
from pathlib import Path

from pydantic import Field

from kdkit import hookimpl
from kdkit.data.build import (SPLIT_FILES, BuildReport, SourceBuildOptions, Timer, check_size,
                              finish_build, split_by_group, write_jsonl)
from kdkit.data.corpus import load_corpus, size_filter
from kdkit.data.formats import as_binary, field, read_json_rows
from kdkit.data.metrics import binary_metrics
from kdkit.data.pyfuncs import normalise_code
from kdkit.data.task import CodeTask, CodeTaskOptions

LABELS = ("no_value", "value")


class ReturnsBuildOptions(SourceBuildOptions):
    max_lines: int = Field(25, ge=2, description="skip functions longer than this (lines)")
    min_examples: int = Field(10, ge=0, description="fewer examples is an error")


def returns_value(fn):
    return any(isinstance(n, ast.Return) and n.value is not None for n in fn.walk())


def build(out_dir, options, *, quiet=False):
    timer, out = Timer(), Path(out_dir)
    corpus = load_corpus(options, size_filter(2, options.max_lines, 4000), quiet)
    items = [(sf.group(options.split_by), normalise_code(fn.text),
              {"code": fn.text, "label": int(returns_value(fn))}) for sf, fn in corpus.functions]
    result = split_by_group(items, lambda i: i[0], lambda i: i[1], options.seed)
    rows = {s: [i[2] for i in chosen] for s, chosen in result.splits.items()}
    check_size("returns", {s: len(r) for s, r in rows.items()}, options.min_examples)
    for split, name in SPLIT_FILES.items():
        write_jsonl(out / f"{name}.jsonl", rows[split])
    counts = {s: {LABELS[k]: v for k, v in sorted(Counter(r["label"] for r in rs).items())}
              for s, rs in rows.items()}
    report = BuildReport("returns", out, counts, dict(corpus.skipped), corpus.sources,
                         {"max_lines": options.max_lines, "seed": options.seed})
    return finish_build(report, timer)


def row(obj, where):
    return {"text": field(obj, ("code",), where),
            "label": as_binary(field(obj, ("label",), where), where)}


class ReturnsOptions(CodeTaskOptions):
    max_lines: int | None = Field(None, ge=2, description="offline build only")


class ReturnsTask(CodeTask):
    name = "returns"
    headline_metric = "accuracy"
    format_name = "returns JSONL (code, label)"
    builder_options = ReturnsBuildOptions
    build_offline = staticmethod(build)
    offline_fields_if_set = ("max_lines",)
    metrics = staticmethod(binary_metrics)

    def default_labels(self):
        return list(LABELS)

    def read_local(self, data_dir, explicit):
        return read_json_rows(data_dir, explicit, row, self.build_hint)


@hookimpl
def register_tasks(register):
    register("returns", ReturnsTask, config=ReturnsOptions,
             description="does the function return a value?")
'''

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
    (pkg / "kdkit_returns.py").write_text(textwrap.dedent(MODULE))
    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    src = tmp_path / "src"
    src.mkdir()
    for path in stdlib_sample(("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py")):
        shutil.copy(path, src / path.name)
    env = {**os.environ, "KDKIT_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}  # fmt: skip

    def kdkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kdkit", *args], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    listed = kdkit("data", "build", "--help")
    assert listed.returncode == 0 and "returns" in listed.stdout, listed.stderr
    helped = kdkit("data", "build", "returns", "--help")
    assert helped.returncode == 0, helped.stderr
    flat = " ".join(helped.stdout.split())
    assert "--max-lines N skip functions longer than this (lines) (default: 25)" in flat
    assert "--near-miss-share" not in flat  # only the task's own builder options

    out = tmp_path / "built"
    built = kdkit("data", "build", "returns", "--from", str(src), "--out", str(out),
                  "--max-lines", "12", "--json", "--quiet")  # fmt: skip
    assert built.returncode == 0, built.stderr
    stats = json.loads(built.stdout)
    assert stats["task"] == "returns" and stats["options"] == {"max_lines": 12, "seed": 0}
    rows = {n: [json.loads(x) for x in (out / f"{n}.jsonl").open()] for n in ("train", "valid", "test")}
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
        "finished", "returns", "accuracy")  # fmt: skip
    assert summary["steps"] == 64 // 16  # max_train rows of the built train split, one epoch
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
