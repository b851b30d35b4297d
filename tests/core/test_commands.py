"""The ``register_commands`` hook: plugins add ``kdkit`` sub-commands; failures are isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import kdkit.cli as cli
import kdkit.discovery as discovery
from kdkit import hookimpl
from kdkit.cli.plugins import plugins_report
from kdkit.errors import KdkitError
from tests.core.conftest import make_distribution


class Greeter:
    """An in-test plugin adding ``kdkit greet --name X [--times N]``."""

    @hookimpl
    def register_commands(self, add_command):
        def configure(parser):
            parser.add_argument("--name", required=True)
            parser.add_argument("--times", type=int, default=1)

        def run(args):
            """Say hello (the exit status is the number of greetings)."""
            print(" ".join([f"hello {args.name}"] * args.times))
            return args.times

        add_command("greet", run, configure=configure)


class Crasher:
    @hookimpl
    def register_commands(self, add_command):
        add_command("crash", lambda args: 1 / 0, help="divides by zero")
        add_command("badconf", lambda args: 0, configure=lambda p: p.add_argument(), help="x")
        add_command("run", lambda args: 0, help="tries to replace a built-in")


class BrokenHook:
    @hookimpl
    def register_commands(self, add_command):
        raise RuntimeError("command hook broken on purpose")


class SecondGreeter:
    @hookimpl
    def register_commands(self, add_command):
        add_command("greet", lambda args: 0, help="another greet")


@pytest.fixture
def use_plugins(monkeypatch):
    """Make the CLI load exactly the given in-test plugins."""

    def use(*extra):
        plugins = discovery.load_plugins(allow=[], extra=list(extra))
        monkeypatch.setattr(discovery, "load_plugins", lambda: plugins)
        return plugins

    return use


def test_hook_register_commands(use_plugins, capsys):
    plugins = use_plugins(("greeter", Greeter()))
    command = plugins.commands["greet"]
    assert (command.origin.plugin, command.help) == (
        "greeter",
        "Say hello (the exit status is the number of greetings).",
    )
    assert cli.main(["greet", "--name", "ada", "--times", "2"]) == 2
    assert capsys.readouterr().out == "hello ada hello ada\n"
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "greet Say hello" in " ".join(capsys.readouterr().out.split())  # wrapped by argparse
    with pytest.raises(SystemExit) as info:
        cli.main(["greet"])
    assert info.value.code == 2 and "--name" in capsys.readouterr().err


def test_built_in_commands_do_not_load_plugins(monkeypatch):
    def fail():
        raise AssertionError("a built-in command must not load plugins to build its parser")

    monkeypatch.setattr(discovery, "load_plugins", fail)
    with pytest.raises(SystemExit):
        cli.main(["config", "--help"])


def test_failed_commands_are_reported_like_plugin_failures(use_plugins, capsys):
    use_plugins(("crasher", Crasher()), ("broken", BrokenHook()))
    # a command that raises is a plugin error naming the plugin, without a traceback
    assert cli.main(["crash"]) == 2
    err = capsys.readouterr().err
    assert "plugin 'crasher' (<in-process> ): command 'crash' failed: ZeroDivisionError" in err
    assert "Traceback" not in err
    # a command whose configure fails is missing, and `kdkit badconf` says which plugins failed
    assert cli.main(["badconf"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'badconf'" in err and "configure failed: TypeError" in err
    report = plugins_report(discovery.load_plugins())
    failed = {(f["plugin"], f["error"].split(":")[0]) for f in report["failed"]}
    assert failed == {
        ("broken", "RuntimeError"),
        ("crasher", "command 'badconf'"),
        ("crasher", "command 'run'"),
    }
    assert [c["name"] for c in report["commands"]] == ["crash"]
    (replaced,) = [f for f in report["failed"] if "'run'" in f["error"]]
    assert "is a built-in kdkit command" in replaced["error"]
    assert "KDKIT_DISABLE_PLUGINS=crasher" in replaced["fix"]


def test_an_unknown_command_suggests_the_closest(use_plugins, capsys):
    use_plugins(("greeter", Greeter()))
    assert cli.main(["gret", "--name", "x"]) == 2
    assert "unknown command 'gret' — did you mean 'greet'?" in capsys.readouterr().err


def test_two_plugins_adding_one_command_collide(use_plugins, capsys):
    use_plugins(("greeter", Greeter()), ("second", SecondGreeter()))
    assert cli.main(["greet", "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "2 plugins register the command 'greet': 'greeter'" in err
    assert "KDKIT_DISABLE_PLUGINS=second" in err


def test_a_missing_built_in_command_module_is_an_error(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "no-such-command"])
    with pytest.raises(KdkitError) as info:
        cli.build_parser()
    assert info.value.what == "the built-in command module kdkit.cli.no-such-command is missing"
    assert cli.main(["run", "--help"]) == 2
    assert "re-install kdkit" in capsys.readouterr().err


COMMAND_MODULE = '''
from kdkit import hookimpl
from kdkit.errors import KdkitError


def configure(parser):
    parser.add_argument("words", nargs="+")


def shout(args):
    """Print the words in capitals."""
    if args.words == ["fail"]:
        raise KdkitError("cannot shout 'fail'", fix="shout something else")
    print(" ".join(args.words).upper())


@hookimpl
def register_commands(add_command):
    add_command("shout", shout, configure=configure)
'''


def test_an_installed_distribution_adds_a_command(tmp_path):
    make_distribution(
        tmp_path, "kdkit-shout", {"shout": "kdkit_shout"}, {"kdkit_shout": COMMAND_MODULE}
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }

    def kdkit(*args):
        return subprocess.run(
            [sys.executable, "-m", "kdkit", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    out = kdkit("shout", "hello", "world")
    assert (out.returncode, out.stdout) == (0, "HELLO WORLD\n"), out.stderr
    failed = kdkit("shout", "fail")
    assert failed.returncode == 2 and "cannot shout 'fail'" in failed.stderr
    listed = json.loads(kdkit("plugins", "--json", "--kind", "command").stdout)
    assert listed["commands"] == [
        {
            "name": "shout",
            "kind": "command",
            "plugin": "shout",
            "distribution": "kdkit-shout",
            "version": "1.0",
            "description": "Print the words in capitals.",
        }
    ]
    assert listed["components"] == []
