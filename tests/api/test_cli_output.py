"""Command-line output: examples in every command's --help, `kdkit run --json`, log files."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdkit.cli import build_parser, main
from kdkit.cli.help import EXAMPLES, commands

from .conftest import TINY

HERE = Path(__file__).parent


def help_of(words: list[str], capsys) -> str:
    """What ``kdkit WORDS --help`` prints."""
    try:
        main([*words, "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    return capsys.readouterr().out


def test_every_built_in_command_has_examples_in_its_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    found = dict(commands(build_parser()))
    assert set(found) == set(EXAMPLES)  # a new command needs its examples (kdkit/cli/help.py)
    for name in [*found, "data build exception", "data build clone", "data build defect"]:
        text = help_of(name.split(), capsys)
        assert "\nexamples:\n" in text, name
        section = text.split("\nexamples:\n", 1)[1]
        lines = [line.strip() for line in section.splitlines()]
        assert any(line.startswith(f"kdkit {name}") for line in lines), name
        assert sum(line.startswith("# ") for line in lines) >= 1, name


def example_lines():
    for pairs in EXAMPLES.values():
        for _, line in pairs:
            yield pytest.param(line, id=line)


@pytest.mark.parametrize("line", list(example_lines()))
def test_every_example_command_line_parses(line):
    words = shlex.split(line)
    words = words[words.index("kdkit") + 1 :]  # `cat code.py | kdkit ...`
    for stop in (">", "|"):
        if stop in words:
            words = words[: words.index(stop)]
    if "--help" in words:
        return  # prints a help and exits, by design
    args = build_parser().parse_args(words)
    assert callable(args.func)
    if words[:2] == ["data", "build"]:  # TASK's flags are parsed by the task's own parser
        from kdkit.cli.data import _builder, task_parser
        from kdkit.discovery import load_plugins

        component = load_plugins().registry.get("task", words[2])
        ns, unknown = task_parser(words[2], component, _builder(component)[0]).parse_known_args(
            words[3:]
        )
        assert not unknown and ns.out


@pytest.mark.parametrize("task", ["exception", "clone", "defect"])
def test_every_data_build_task_example_parses(task):
    from kdkit.cli.help import task_examples

    for _, line in task_examples(task):
        test_every_example_command_line_parses(line)


def test_dry_run_json_is_the_resolved_run_alone_on_stdout(tmp_path, capsys):
    assert main(["run", "--dry-run", "--json", "--set", "training.epochs=3"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["training"]["epochs"] == 3 and data["method"]["name"] == "contrastive"


def test_a_run_logged_to_files_json_on_stdout_plain_progress_on_stderr(tmp_path):
    run_file = tmp_path / "run.yaml"
    # the console reporter is told to print to stdout: --json must still keep stdout clean
    sections = dict(
        TINY,
        output_dir=str(tmp_path / "run"),
        reporters=["jsonl", {"name": "console", "stream": "stdout"}],
    )
    run_file.write_text(yaml.safe_dump(sections), encoding="utf-8")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.log"
    env = dict(os.environ, KDKIT_CACHE=str(tmp_path / "cache"), KDKIT_PROGRESS_SECONDS="0")
    with out.open("w") as fo, err.open("w") as fe:
        done = subprocess.run(
            [sys.executable, str(HERE / "run_cli_tiny.py"), "run", str(run_file), "--json"],
            stdout=fo,
            stderr=fe,
            env=env,
            timeout=900,
            check=False,
        )
    log = err.read_text(encoding="utf-8")
    assert done.returncode == 0, log[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))  # stdout is the JSON and nothing else
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished" and summary["steps"] == 8
    # progress bars degrade to plain lines in a file: no carriage returns anywhere
    assert "\r" not in log and "\r" not in out.read_text(encoding="utf-8")
    assert "train: 8/8 (100%)" in log
    assert "teacher cache (train): 32/32 (100%)" in log
    assert "[step 4] validation: accuracy=" in log  # the console reporter, sent to stderr
