"""A plugin written from docs/plugin-tutorial.md alone, installed with pip, is found and runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.outsider import pip_install

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kdkit-cosine"
version = "0.2.0"
dependencies = ["kdkit"]

[project.entry-points.kdkit]
cosine = "kdkit_cosine"
"""

MODULE = '''
"""Cosine distance between student and teacher probability vectors (a toy method)."""
import torch
from pydantic import Field
from kdkit import hookimpl
from kdkit.api import KDMethod, Needs, Options, Requirements


class CosineOptions(Options):
    weight: float = Field(1.0, ge=0)


class Cosine(KDMethod):
    def __init__(self, options, context):
        super().__init__()
        self.weight = options.weight
        self.requirements = Requirements(student=Needs(), teacher=Needs())

    def forward(self, student, teacher, batch):
        ps, pt = student.logits.softmax(-1), teacher.logits.softmax(-1).to(student.logits.dtype)
        cos = torch.nn.functional.cosine_similarity(ps, pt, dim=-1)
        return {"cosine": self.weight * (1 - cos).mean()}


@hookimpl
def register_kd_methods(register):
    register("cosine", Cosine, config=CosineOptions, description="toy cosine KD")
'''

CHECK = """
from kdkit.testing import check_kd_method
r = check_kd_method("cosine", {"weight": 2.0})
print(r.terms["cosine"])
"""


def test_pip_installed_outsider_plugin_appears_and_runs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "kdkit_cosine.py").write_text(textwrap.dedent(MODULE))
    target = tmp_path / "site"
    env = pip_install(src, target)
    listed = subprocess.run(
        [sys.executable, "-m", "kdkit", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = [c for c in json.loads(listed.stdout)["components"] if c["name"] == "cosine"]
    assert (row["distribution"], row["version"], row["plugin"]) == (
        "kdkit-cosine",
        "0.2.0",
        "cosine",
    )
    ran = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    value = float(ran.stdout.strip())
    assert 0 < value < 4  # weight 2 x (1 - cos) with cos of two probability vectors in (0, 1]
