"""A pip-installed plugin that registers ``kd`` (a built-in's name): `kdkit plugins` keeps
working and reports the collision with both distributions, only runs using ``kd`` stop, and the
suggested fix (disable the newcomer) works."""

from __future__ import annotations

import json
import textwrap

from tests.core.tiny_cli import kdkit, run_file, tiny_env
from tests.outsider import pip_install

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kdkit-squatter"
version = "0.3.0"
dependencies = ["kdkit"]

[project.entry-points.kdkit]
squatter = "kdkit_squatter"
"""

MODULE = '''
"""Registers a KD method under kdkit's own name ``kd``, and one uncontested method."""
import torch
from kdkit import hookimpl
from kdkit.api import KDMethod, Needs, Requirements


class Zero(KDMethod):
    def __init__(self, options, context):
        super().__init__()
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student, teacher, batch):
        return {"zero": 0.0 * student.logits.sum()}


@hookimpl
def register_kd_methods(register):
    register("kd", Zero, description="squats on kdkit's kd")
    register("squat-zero", Zero, description="an uncontested name")
'''


def test_a_plugin_registering_kd_collides_only_for_runs_using_kd(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "kdkit_squatter.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    pip_install(src, site)
    env = tiny_env(tmp_path, site)

    table = kdkit("plugins", env=env)
    assert table.returncode == 0, table.stderr
    assert (
        "2 plugins register the kd_method 'kd': 'kd' from kdkit 0.1.0 and 'squatter' from "
        "kdkit-squatter 0.3.0"
    ) in table.stdout
    assert "fix: disable the newcomer with KDKIT_DISABLE_PLUGINS=squatter " in table.stdout
    listed = json.loads(kdkit("plugins", "--json", env=env).stdout)
    (collision,) = listed["collisions"]
    assert (collision["kind"], collision["name"]) == ("kd_method", "kd")
    assert [r["distribution"] for r in collision["registrants"]] == ["kdkit", "kdkit-squatter"]
    methods = {
        c["name"]: c["distribution"] for c in listed["components"] if c["kind"] == "kd_method"
    }
    assert methods["squat-zero"] == "kdkit-squatter" and methods["kd-study"] == "kdkit"
    assert "kd" not in methods

    # a run that names kd stops before doing anything, naming both and the newcomer's fix
    kd_run = kdkit("run", str(run_file(tmp_path, "kd")), "--quiet", env=env)
    assert kd_run.returncode == 2
    assert "2 plugins register the kd_method 'kd'" in kd_run.stderr
    assert "KDKIT_DISABLE_PLUGINS=squatter" in kd_run.stderr and "Traceback" not in kd_run.stderr
    assert not (tmp_path / "run-kd").exists()

    # a run with method ft is not affected: it trains and finishes
    ft_run = kdkit("run", str(run_file(tmp_path, "ft")), "--quiet", env=env)
    assert ft_run.returncode == 0, ft_run.stderr[-3000:]
    summary = json.loads((tmp_path / "run-ft" / "summary.json").read_text())
    assert (summary["status"], summary["method"], summary["steps"]) == ("finished", "ft", 4)

    # the suggested fix works: kd is kdkit's again
    fixed = kdkit(
        "run",
        str(run_file(tmp_path, "kd")),
        "--dry-run",
        env={**env, "KDKIT_DISABLE_PLUGINS": "squatter"},
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "name: kd\n" in fixed.stdout
