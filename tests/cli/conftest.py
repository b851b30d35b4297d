"""Fixtures of the CLI tests: a tiny exception-classification task read from JSONL files."""

from __future__ import annotations

import json

import pytest

#: The task's label set (C = 4 classes).
LABELS = ["ValueError", "KeyError", "TypeError", "OSError"]


def _function(i: int) -> str:
    body = [f"return x[{i}]", f"return int(x) + {i}", f"return open(x).read()[{i}:]"]
    return (
        f"def f{i}(x):\n    try:\n        {body[i % 3]}\n    except __HOLE__:\n        return {i}\n"
    )


def write_data(folder, rows=(40, 8, 8)):
    """JSONL files of the three splits (CuBERT's fields): ``rows`` examples each."""
    folder.mkdir(parents=True, exist_ok=True)
    files, start = {}, 0
    for split, n in zip(("train", "validation", "test"), rows, strict=True):
        path = folder / f"{split}.jsonl"
        with path.open("w") as fh:
            for i in range(start, start + n):
                fh.write(json.dumps({"function": _function(i), "label": LABELS[i % 4]}) + "\n")
        files[split] = str(path)
        start += n
    return files


def run_yaml(data_files, cache, output_dir, method="{name: kd, temperature: 2, alpha: 0.5}"):
    """A run file over the JSONL task: GRU student, 1 epoch, no teacher section."""
    return f"""
seed: 1
output_dir: {output_dir}
task:
  name: exception
  labels: {json.dumps(LABELS)}
  data_files: {json.dumps(data_files)}
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {method}
training: {{epochs: 1, batch_size: 8, lr: 0.003, max_length: 64, device: cpu, baselines: false}}
cache: {{dir: {cache}}}
reporters: [jsonl]
"""


@pytest.fixture
def data_run(tmp_path):
    """``(run file, cache dir)`` over 40/8/8 rows of the tiny exception task."""
    cache = tmp_path / "cache"
    files = write_data(tmp_path / "data")
    run_file = tmp_path / "run.yaml"
    run_file.write_text(run_yaml(files, cache, tmp_path / "run"))
    return run_file, cache


def task_split(run_file, cache, split):
    """The prepared ``split`` of the run file's task (built like ``kdkit cache import`` does)."""
    from kdkit.api import BuildContext
    from kdkit.config import load_config
    from kdkit.discovery import load_plugins

    resolved = load_config(run_file, load_plugins().registry)
    section = resolved.components["task"]
    task = section.component.build(section.options, BuildContext(cache_dir=str(cache)))
    return task.load()[split]
