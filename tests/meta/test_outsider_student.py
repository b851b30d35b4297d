"""A third-party student installed with pip trains, saves and predicts through the ordinary commands.

The outside package registers its student with ``load=`` (and, to stay small, the tiny task of
``kdkit.testing``); its ``save`` writes ``kdkit.json`` through :func:`kdkit.models.write_model_meta`.
`kdkit run` trains it, saves ``best/model`` and reloads it for the test predictions; `kdkit predict`
(a fresh process) finds the loader through the registry from the component named in
``kdkit.json``; without the package installed it says which component is missing and what to
install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.outsider import pip_install

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kdkit-charbag"
version = "0.1.0"
dependencies = ["kdkit"]

[project.entry-points.kdkit]
charbag = "kdkit_charbag"
"""

MODULE = '''
"""A bag-of-characters student: byte embeddings -> one tanh layer -> mean over real tokens."""
import json
import os

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from kdkit import hookimpl
from kdkit.api import Encoded, ModelInfo, ModelOutput, Options, Student, join_example
from kdkit.models import ComponentRef, read_model_meta, write_model_meta
from kdkit.testing import TinyTask

COMPONENT = ComponentRef("student", "charbag")


class CharBagOptions(Options):
    hidden: int = Field(8, ge=1)


class CharBag(Student):
    def __init__(self, hidden, labels):
        super().__init__()
        self.labels = list(labels)
        self.hidden = hidden
        self.embed = torch.nn.Embedding(257, hidden, padding_idx=256)
        self.layer = torch.nn.Linear(hidden, hidden)
        self.head = torch.nn.Linear(hidden, len(self.labels))
        n = sum(p.numel() for p in self.parameters())
        self.info = ModelInfo("charbag", "charbag", 1, hidden, n)

    def encode(self, examples, max_length):
        texts = [join_example(e)[:max_length] for e in examples]
        width = max(1, max(len(t) for t in texts))
        ids = torch.full((len(texts), width), 256, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        offsets = torch.zeros((len(texts), width, 2), dtype=torch.long)
        for b, t in enumerate(texts):
            for i, ch in enumerate(t):
                ids[b, i] = min(ord(ch), 255)
                mask[b, i] = 1
                offsets[b, i] = torch.tensor([i, i + 1])
        return Encoded(input_ids=ids, attention_mask=mask, offsets=offsets)

    def forward(self, encoded, needs):
        x = self.embed(encoded.input_ids)  # [B, L, H]
        h = torch.tanh(self.layer(x))  # [B, L, H]
        m = encoded.attention_mask.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)  # [B, H]
        states = {0: x, 1: h}
        return ModelOutput(logits=self.head(pooled),
                           hidden_states={i: states[i] for i in needs.hidden_layers},
                           pooled={i: pooled for i in needs.pooled_layers},
                           embedding=pooled if needs.embedding else None,
                           attention_mask=encoded.attention_mask, offsets=encoded.offsets)

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        save_file(self.state_dict(), os.path.join(directory, "model.safetensors"))
        write_model_meta(directory, COMPONENT, {"name": "charbag", "family": "charbag",
                                                "labels": self.labels, "hidden": self.hidden})


def load_charbag(directory):
    meta = read_model_meta(directory)
    model = CharBag(meta["hidden"], meta["labels"])
    model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")))
    return model


def build_charbag(options, context):
    return CharBag(options.hidden, context.task.labels)


@hookimpl
def register_tasks(register):
    register("charbag-tiny", lambda options, context: TinyTask(), description="tiny test task")


@hookimpl
def register_students(register):
    register("charbag", build_charbag, config=CharBagOptions, load=load_charbag,
             description="bag of characters (outside test plugin)")
'''

RUN = """\
seed: 0
output_dir: {out}
task: charbag-tiny
student: {{name: charbag, hidden: 6}}
method: ft
training: {{epochs: 3, batch_size: 8, lr: 0.05, max_length: 64, device: cpu}}
reporters: []
"""


def test_outsider_student_trains_saves_and_predicts_through_kdkit_commands(tmp_path):
    from kdkit.testing.tiny import LABELS, TinyTask

    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "kdkit_charbag.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    env = pip_install(src, site)
    path = os.environ.get("PYTHONPATH", "")
    run_dir = tmp_path / "run"
    (tmp_path / "run.yaml").write_text(RUN.format(out=run_dir))
    trained = subprocess.run(
        [sys.executable, "-m", "kdkit", "run", str(tmp_path / "run.yaml"), "--quiet"],
        env={**env, "KDKIT_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    model_dir = run_dir / "best" / "model"
    meta = json.loads((model_dir / "kdkit.json").read_text())
    assert meta["component"] == {"kind": "student", "name": "charbag"}
    assert meta["labels"] == list(LABELS)

    inputs = tmp_path / "inputs.jsonl"
    texts = TinyTask().load()["test"]["text"]
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    predicted = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdkit",
            "predict",
            str(run_dir),
            "--jsonl",
            str(inputs),
            "--max-length",
            "64",
            "--top-k",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert predicted.returncode == 0, predicted.stderr
    got = [json.loads(line) for line in predicted.stdout.splitlines()]
    # the engine reloaded best/model the same way for the run's own test predictions
    saved = [json.loads(line) for line in (run_dir / "predictions-test.jsonl").open()]
    assert len(got) == len(saved) == len(texts) == 8
    assert [g["label"] for g in got] == [s["label"] for s in saved]
    assert [g["probability"] for g in got] == pytest.approx(
        [s["probability"] for s in saved], abs=1e-5
    )
    for row in got:
        assert row["label"] in LABELS and row["top"][0] == [row["label"], row["probability"]]
        assert sum(p for _, p in row["top"]) == pytest.approx(1, abs=1e-5)  # all 3 classes
    assert len({g["probability"] for g in got}) > 1  # different inputs, different outputs

    # The same model without the package installed: the component is named, with the fix.
    bare = {**os.environ, "PYTHONPATH": path}
    missing = subprocess.run(
        [sys.executable, "-m", "kdkit", "predict", str(run_dir), "--jsonl", str(inputs)],
        env=bare,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2, missing.stderr
    assert "student 'charbag'" in missing.stderr and "not installed" in missing.stderr
    assert "install the distribution" in missing.stderr
    assert "Traceback" not in missing.stderr
