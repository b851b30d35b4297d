"""The `kdkit` command: help everywhere, user errors without tracebacks, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdkit.cli import build_parser, main


def _kdkit(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "kdkit", *args], capture_output=True, text=True, timeout=180, cwd=cwd
    )


BAD = """\
task: exception
student: transformer
method:
  name: kdd
  temperature: 4
training:
  epochs: many
  bach_size: 16
"""


def test_validate_reports_all_problems_with_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    out = _kdkit("config", "validate", str(path))
    assert out.returncode == 2
    err = out.stderr
    assert "Traceback" not in err
    assert f"{path}:4 method.name: unknown kd_method 'kdd' — did you mean 'kd'?" in err
    assert f"{path}:7 training.epochs:" in err and "'many'" in err
    assert (
        f"{path}:8 training.bach_size: unknown option" in err
        and "did you mean 'batch_size'?" in err
    )
    assert "3 problems" in err


def test_unknown_component_option_and_misspelt_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: exceptoin\nstudent: transformer\nmethod:\n  name: kd\n  temprature: 4\n")
    out = _kdkit("config", "validate", str(path))
    assert out.returncode == 2, out.stdout
    assert f"{path}:1 task.name: unknown task 'exceptoin' — did you mean 'exception'?" in out.stderr
    assert f"{path}:5 method.temprature: unknown option (kd accepts:" in out.stderr
    assert "did you mean 'temperature'?" in out.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    out = _kdkit("config", "validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert "configuration file not found" in out.stderr and "Traceback" not in out.stderr


def test_schema_describes_installed_components():
    out = _kdkit("config", "schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    variants = schema["properties"]["method"]["anyOf"]
    names = {v["properties"]["name"]["const"] for v in variants if "properties" in v}
    assert {"ft", "kd", "dist", "pkd", "ckd"} <= names
    kd = next(v for v in variants if v.get("properties", {}).get("name", {}).get("const") == "kd")
    assert kd["additionalProperties"] is False and "temperature" in kd["properties"]


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"kdkit {command}" in text and len(text) > 120


def test_teach_needs_only_task_and_teacher(tmp_path, capsys):
    """`kdkit teach` reads task and teacher; a file without student/method is not an error."""
    path = tmp_path / "teach.yaml"
    path.write_text("task: exception\ntraining: {num_threads: 1}\n")
    assert main(["teach", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the run file has no teacher section" in err  # got past validation
    assert "student" not in err and "method" not in err and "Traceback" not in err
    path.write_text("task: exception\nteacher: {name: code-teacher, hiden_size: 8}\n")
    assert main(["teach", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "teacher.hiden_size" in err and "did you mean 'hidden_size'" in err
    assert "student" not in err and "method" not in err
