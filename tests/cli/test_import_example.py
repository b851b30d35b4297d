"""The worked example end to end: a tiny random RoBERTa (plain ``transformers``) writes the import
file, ``kdkit cache import`` stores it, and a KD run trains from it (40 rows, 1 epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kdkit.data.example_ids import example_ids

from .conftest import LABELS, run_yaml, task_split, write_data

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "import_teacher_outputs.py"


@pytest.mark.parametrize("topk", [0, 2], ids=["full-logits", "top-2"])
def test_the_documented_example_imports_a_transformers_teacher_and_trains_kd(tmp_path, topk):
    pytest.importorskip("transformers")
    cache = tmp_path / "cache"
    files = write_data(tmp_path / "data")
    run_file = tmp_path / "run.yaml"
    run_file.write_text(run_yaml(files, cache, tmp_path / "unused"))
    work = tmp_path / "work"
    env = {**os.environ, "KDKIT_CACHE": str(cache)}
    cmd = [
        sys.executable,
        str(EXAMPLE),
        "--config",
        str(run_file),
        "--model-dir",
        str(tmp_path / "model"),
        "--work",
        str(work),
        "--make-tiny-model",
        "--topk",
        str(topk),
        "--temperature",
        "2",
        "--name",
        "roberta-tiny",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "imported 40 rows of the exception task's train split" in done.stdout
    # the file the transformers side wrote: every train row once, the documented metadata
    with safe_open(str(work / "teacher-train.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        ids = fh.get_tensor("ids")
        names = set(fh.keys())
    assert meta["format"] == "kdkit-teacher-outputs" and meta["temperature"] == "2.0"
    assert meta["num_classes"] == str(len(LABELS)) and meta["split"] == "train"
    assert sorted(ids.tolist()) == sorted(example_ids(task_split(run_file, cache, "train")))
    assert names == (
        {"ids", "logits"} if not topk else {"ids", "topk_logprobs", "topk_indices", "tail"}
    )
    entry = json.loads((cache / "teacher-imports" / "roberta-tiny-train" / "meta.json").read_text())
    assert entry["rows"] == 40 and entry["temperature"] == 2.0
    assert entry["bytes_per_example"] == (4 * len(LABELS) if not topk else 8 * topk + 4)
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["teacher_signal"] == "import"
    assert summary["teacher"]["imported"]["name"] == "roberta-tiny"
    steps = [
        json.loads(line)
        for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
        if '"step"' in line
    ]
    kd = [r["kd"] for r in steps if r.get("event") == "step"]
    assert len(kd) == 5 and all(torch.isfinite(torch.tensor(kd))) and min(kd) > 0
