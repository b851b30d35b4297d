"""The outsider's path: the example plugin package, installed from its folder, is found."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

FIX = "install it as CI does: pip install -e ./docs/examples/kdkit-logit-mse"


def test_example_plugin_is_installed_and_listed():
    try:
        dist = metadata.distribution("kdkit-logit-mse")
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed; {FIX}")
    assert [ep.value for ep in dist.entry_points if ep.group == "kdkit"] == [
        "kdkit_logit_mse.plugin"
    ]
    out = subprocess.run(
        [sys.executable, "-m", "kdkit", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [c for c in json.loads(out.stdout)["components"] if c["name"] == "logit-mse"]
    assert len(rows) == 1, f"logit-mse missing from `kdkit plugins`; {FIX}"
    assert rows[0]["kind"] == "kd_method"
    assert rows[0]["distribution"] == "kdkit-logit-mse" and rows[0]["plugin"] == "logit-mse"
