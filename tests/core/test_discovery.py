"""Entry-point discovery: failure isolation, duplicates, allow/block lists, lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kdkit import hookimpl
from kdkit.discovery import load_plugins
from kdkit.errors import PluginError
from tests.core.conftest import CorePlugin, make_distribution

GOOD_MODULE = """
from kdkit import hookimpl
from kdkit.api import Options

class Opts(Options):
    weight: float = 1.0

@hookimpl
def register_kd_methods(register):
    register("outsider", lambda o, c: o, config=Opts, description="a third-party method")
"""

BROKEN_MODULE = """
raise RuntimeError("this plugin is broken on purpose")
"""

DUPLICATE_MODULE = """
from kdkit import hookimpl

@hookimpl
def register_reporters(register):
    register("console", lambda o, c: o, description="clashes with kdkit's console")
"""


def _env(path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    env.pop("KDKIT_PLUGINS", None)
    env.pop("KDKIT_DISABLE_PLUGINS", None)
    return env


def _kdkit(args, env):
    return subprocess.run(
        [sys.executable, "-m", "kdkit", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def outsider_dists(tmp_path):
    make_distribution(tmp_path, "kdkit-outsider", {"outsider": "kdkit_outsider"},
                      {"kdkit_outsider": GOOD_MODULE})  # fmt: skip
    make_distribution(tmp_path / "b", "kdkit-broken", {"broken": "kdkit_broken"},
                      {"kdkit_broken": BROKEN_MODULE})  # fmt: skip
    return tmp_path


def test_broken_plugin_is_reported_and_does_not_stop_others(outsider_dists):
    env = _env(outsider_dists)
    env["PYTHONPATH"] = os.pathsep.join([str(outsider_dists / "b"), env["PYTHONPATH"]])
    out = _kdkit(["plugins", "--json"], env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    names = {(c["kind"], c["name"]): c for c in report["components"]}
    assert names[("kd_method", "outsider")]["distribution"] == "kdkit-outsider"
    assert names[("kd_method", "outsider")]["options"] == ["weight"]
    assert names[("reporter", "console")]["distribution"] == "kdkit"
    (failed,) = [f for f in report["failed"] if f["plugin"] == "broken"]
    assert failed["distribution"] == "kdkit-broken"
    assert "this plugin is broken on purpose" in failed["error"]
    assert "KDKIT_DISABLE_PLUGINS=broken" in failed["fix"]
    table = _kdkit(["plugins"], env)
    assert table.returncode == 0 and "failed to load" in table.stdout
    assert "Traceback" not in table.stdout + table.stderr


def test_duplicate_names_name_both_distributions(tmp_path):
    make_distribution(tmp_path, "kdkit-dup", {"dup": "kdkit_dup"}, {"kdkit_dup": DUPLICATE_MODULE})
    out = _kdkit(["plugins"], _env(tmp_path))
    assert out.returncode == 2
    assert "two plugins register the reporter 'console'" in out.stderr
    assert "from kdkit 0.1.0" in out.stderr and "from kdkit-dup 1.0" in out.stderr
    assert "Traceback" not in out.stderr
    # the fix it suggests works
    env = _env(tmp_path)
    env["KDKIT_DISABLE_PLUGINS"] = "dup"
    assert _kdkit(["plugins"], env).returncode == 0


def test_allow_and_block_lists(outsider_dists, monkeypatch):
    monkeypatch.syspath_prepend(str(outsider_dists))
    only = load_plugins(allow=["outsider"])
    assert [c.name for c in only.registry] == ["outsider"]
    blocked = load_plugins(block=["outsider"], distributions=["kdkit-outsider", "kdkit"])
    assert "outsider" not in blocked.registry.names("kd_method")
    monkeypatch.setenv("KDKIT_PLUGINS", "console,jsonl")
    assert sorted(c.name for c in load_plugins().registry) == ["console", "jsonl"]


def test_lookup_suggests_and_lists_failures(outsider_dists, monkeypatch):
    monkeypatch.syspath_prepend(str(outsider_dists / "b"))
    monkeypatch.syspath_prepend(str(outsider_dists))
    plugins = load_plugins(allow=["outsider", "broken"])
    with pytest.raises(PluginError) as info:
        plugins.registry.get("kd_method", "outsidr")
    assert "did you mean 'outsider'" in info.value.what
    assert "'broken'" in info.value.fix  # the failed plugin might have provided it


def test_component_knows_its_plugin_and_distribution():
    plugins = load_plugins(allow=[], extra=[("core-test", CorePlugin())])
    comp = plugins.registry.get("kd_method", "kd")
    assert (comp.origin.plugin, comp.origin.distribution) == ("core-test", "<in-process>")
    assert comp.description == "test kd"


def test_lifecycle_observers_are_isolated(capsys):
    seen = []

    class Observer:
        @hookimpl
        def on_eval_end(self, split, metrics):
            seen.append((split, dict(metrics)))

    class Faulty:
        @hookimpl
        def on_eval_end(self, step):
            raise ValueError("observer bug")

    plugins = load_plugins(allow=[], extra=[("obs", Observer()), ("faulty", Faulty())])
    plugins.notify("on_eval_end", run=None, step=3, split="validation", metrics={"accuracy": 0.5})
    assert seen == [("validation", {"accuracy": 0.5})]
    assert (
        "plugin 'faulty' raised in on_eval_end: ValueError: observer bug" in capsys.readouterr().err
    )


def test_hook_trace(capsys):
    class Observer:
        @hookimpl
        def on_run_end(self, summary):
            pass

    plugins = load_plugins(allow=[], extra=[("obs", Observer())], trace=True)
    plugins.pm.hook.on_run_end(run=None, summary={"x": 1})
    assert "kdkit-trace:" in capsys.readouterr().err
