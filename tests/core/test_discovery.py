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
    make_distribution(
        tmp_path, "kdkit-outsider", {"outsider": "kdkit_outsider"}, {"kdkit_outsider": GOOD_MODULE}
    )
    make_distribution(
        tmp_path / "b", "kdkit-broken", {"broken": "kdkit_broken"}, {"kdkit_broken": BROKEN_MODULE}
    )
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


def test_duplicate_names_are_a_collision_not_an_installation_error(tmp_path):
    """Behaviour changed by issue 12: `kdkit plugins` keeps working and reports the collision."""
    make_distribution(tmp_path, "kdkit-dup", {"dup": "kdkit_dup"}, {"kdkit_dup": DUPLICATE_MODULE})
    out = _kdkit(["plugins"], _env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "2 plugins register the reporter 'console'" in out.stdout
    assert "from kdkit 0.1.0" in out.stdout and "from kdkit-dup 1.0" in out.stdout
    assert "KDKIT_DISABLE_PLUGINS=dup" in out.stdout  # the newcomer, not kdkit's own plugin
    listed = json.loads(_kdkit(["plugins", "--json"], _env(tmp_path)).stdout)
    (collision,) = listed["collisions"]
    assert [r["distribution"] for r in collision["registrants"]] == ["kdkit", "kdkit-dup"]
    assert "console" not in {c["name"] for c in listed["components"] if c["kind"] == "reporter"}
    # the fix it suggests works
    env = _env(tmp_path)
    env["KDKIT_DISABLE_PLUGINS"] = "dup"
    fixed = json.loads(_kdkit(["plugins", "--json"], env).stdout)
    assert fixed["collisions"] == []
    assert "console" in {c["name"] for c in fixed["components"]}


def test_collision_is_fatal_only_for_the_contested_name():
    class Newcomer:
        @hookimpl
        def register_reporters(self, register):
            register("console", lambda o, c: o, description="a second console")
            register("fresh", lambda o, c: o, description="an uncontested name")

    plugins = load_plugins(allow=[], extra=[("core-test", CorePlugin()), ("newcomer", Newcomer())])
    registry = plugins.registry
    assert registry.names("reporter") == ["fresh", "jsonl"]
    with pytest.raises(PluginError) as info:
        registry.get("reporter", "console")
    assert info.value.what == (
        "2 plugins register the reporter 'console': 'core-test' from <in-process> and "
        "'newcomer' from <in-process>"
    )
    assert "KDKIT_DISABLE_PLUGINS=newcomer" in info.value.fix
    assert registry.get("kd_method", "kd").origin.plugin == "core-test"  # others unaffected


def test_builtins_are_the_incumbents_whatever_the_entry_point_names(tmp_path):
    """A third party whose entry point sorts before kdkit's is still the newcomer."""
    make_distribution(tmp_path, "kdkit-aaa", {"aaa": "kdkit_aaa"}, {"kdkit_aaa": DUPLICATE_MODULE})
    listed = json.loads(_kdkit(["plugins", "--json"], _env(tmp_path)).stdout)
    (collision,) = listed["collisions"]
    assert [r["plugin"] for r in collision["registrants"]] == ["console", "aaa"]
    assert "KDKIT_DISABLE_PLUGINS=aaa " in collision["fix"]


def test_a_failed_registration_leaves_nothing_behind():
    class HalfBroken:
        @hookimpl
        def register_kd_methods(self, register):
            register("half", lambda o, c: o)
            register("Bad Name", lambda o, c: o)

    plugins = load_plugins(allow=[], extra=[("half", HalfBroken()), ("core-test", CorePlugin())])
    assert "half" not in plugins.registry.names("kd_method")
    (failure,) = plugins.failures
    assert failure.plugin == "half" and "invalid kd_method name 'Bad Name'" in failure.error
    assert "half" not in plugins.origins and plugins.registry.names("kd_method") == ["dist", "kd"]


def test_allow_and_block_lists(outsider_dists, monkeypatch):
    monkeypatch.syspath_prepend(str(outsider_dists))
    only = load_plugins(allow=["outsider"])  # the Python argument is exact
    assert [c.name for c in only.registry] == ["outsider"]
    blocked = load_plugins(block=["outsider"], distributions=["kdkit-outsider", "kdkit"])
    assert "outsider" not in blocked.registry.names("kd_method")


def _dists(plugins) -> set[str]:
    return {o.distribution for o in plugins.origins.values()}


def test_kdkit_plugins_keeps_the_builtins(outsider_dists, monkeypatch):
    """KDKIT_PLUGINS=a,b: kdkit's own plugins plus these third-party ones (issue 12 rule)."""
    monkeypatch.syspath_prepend(str(outsider_dists / "b"))
    monkeypatch.syspath_prepend(str(outsider_dists))
    everything = load_plugins()
    assert {"kdkit", "kdkit-outsider"} <= _dists(everything)
    assert [f.plugin for f in everything.failures] == ["broken"]
    builtins = {n for n, o in everything.origins.items() if o.distribution == "kdkit"}
    assert {"kd", "ft", "console", "kernels"} <= builtins
    monkeypatch.setenv("KDKIT_PLUGINS", "outsider")
    kept = load_plugins()
    assert set(kept.origins) == builtins | {"outsider"}  # other third parties skipped
    assert kept.failures == [] and "kd" in kept.registry.names("kd_method")
    monkeypatch.setenv("KDKIT_PLUGINS", "only:outsider,console")
    exact = load_plugins()
    assert sorted(exact.origins) == ["console", "outsider"]
    monkeypatch.setenv("KDKIT_PLUGINS", "outsider")
    monkeypatch.setenv("KDKIT_DISABLE_PLUGINS", "kd,outsider")
    disabled = load_plugins()
    assert "kd" not in disabled.origins and "outsider" not in disabled.origins
    assert "ft" in disabled.origins


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


def test_trace_shows_registration_and_observer_calls(capsys):
    class Observer:
        @hookimpl
        def on_run_end(self, summary):
            pass

    plugins = load_plugins(
        allow=[], extra=[("obs", Observer()), ("core-test", CorePlugin())], trace=True
    )
    err = capsys.readouterr().err
    # registration goes through pluggy too: the plugin and each of its register_* hooks show
    assert "kdkit-trace: plugin core-test (<in-process> ) [pluginmanage:register]" in err
    for hook in ("register_tasks", "register_kd_methods", "register_reporters"):
        assert f"kdkit-trace:   {hook} [hook]" in err
    plugins.notify("on_run_end", run=None, summary={"x": 1})
    assert "kdkit-trace:   on_run_end [hook]" in capsys.readouterr().err


def test_a_plugin_name_taken_by_kdkit_is_not_loaded_and_says_why(tmp_path):
    make_distribution(
        tmp_path,
        "kdkit-same-name",
        {"console": "kdkit_same_name"},
        {"kdkit_same_name": DUPLICATE_MODULE},
    )
    listed = json.loads(_kdkit(["plugins", "--json"], _env(tmp_path)).stdout)
    (failed,) = [f for f in listed["failed"] if f["distribution"] == "kdkit-same-name"]
    assert failed["error"] == "the plugin name 'console' is already used by kdkit"
    assert "rename the entry point 'console'" in failed["fix"]
    (console,) = [c for c in listed["components"] if c["name"] == "console"]
    assert console["distribution"] == "kdkit" and listed["collisions"] == []


def test_shared_work_busy_passes_through_the_plugin_error_wrapper():
    """A component's build that finds shared work busy (a study worker's teacher build while
    another process pre-trains) must reach the study's gate as itself, not as a plugin bug."""
    from kdkit.shared_work import SharedWorkBusy

    plugins = load_plugins(allow=[], extra=[("core-test", CorePlugin())])
    comp = plugins.registry.get("kd_method", "kd")

    def busy():
        raise SharedWorkBusy("pre-training the code encoder", "/cache/pretrained/x")

    with pytest.raises(SharedWorkBusy, match="another process is pre-training"):
        comp._call(busy, "build")
    with pytest.raises(PluginError, match="failed to build: ValueError"):
        comp._call(lambda: int("x"), "build")
