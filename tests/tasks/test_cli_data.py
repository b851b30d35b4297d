"""``kdkit data build`` / ``kdkit data info`` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kdkit.cli import main
from kdkit.data.corpus import stdlib_sample


def test_build_exception_from_a_directory_and_info(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for p in stdlib_sample(("shutil.py", "pathlib.py", "os.py", "inspect.py", "tarfile.py")):
        shutil.copy(p, src / p.name)
    (src / "broken.py").write_text("def f(:\n")  # unparsable: skipped and counted
    (src / "latin1.py").write_bytes(b"s = '\xe9'\n")  # not UTF-8: skipped and counted
    out = tmp_path / "out"
    rc = main(
        [
            "data",
            "build",
            "exception",
            "--from",
            str(src),
            "--out",
            str(out),
            "--min-examples",
            "20",
            "--labels",
            "top-5",
            "--no-holdout",  # five files: too few to hold some out (tests/tasks/test_holdout.py)
            "--quiet",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "validation" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped"]["syntax_error"] == 1 and stats["skipped"]["not_utf8"] == 1
    # top-5 of five files: the labels some split lacks are dropped (min_label_rows 1) and listed
    kept, dropped = stats["options"]["labels"], stats["labels_dropped"]
    assert len(kept) + len(dropped) == 5 and len(kept) >= 2
    assert all(min(per_split.values()) == 0 for per_split in dropped.values())
    assert all(min(stats["labels"][s].get(lab, 0) for s in stats["labels"]) >= 1 for lab in kept)
    assert sum(stats["sizes"].values()) == sum(
        1 for name in ("train", "valid", "test") for _ in (out / f"{name}.jsonl").open()
    )
    assert main(["data", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == stats


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert (
        main(["data", "build", "clone", "--from", str(tmp_path / "none"), "--out", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert "neither 'stdlib'" in err and "fix:" in err and "Traceback" not in err
    assert main(["data", "build", "defect", "--window", "3", "--out", str(tmp_path)]) == 2
    assert "--window does not apply" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["data", "build", "exception", "--from", str(empty), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "produced 0 examples" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train.jsonl").exists()
    assert main(["data", "info", str(tmp_path)]) == 2


def _run(argv):
    """``main(argv)``'s exit status, also when argparse exits (``--help``)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_docs_show_the_real_generated_help(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal width
    docs = (Path(__file__).resolve().parents[2] / "docs" / "tasks.md").read_text(encoding="utf-8")
    for argv in (["data", "build", "--help"], ["data", "build", "exception", "--help"]):
        assert _run(argv) == 0
        out = capsys.readouterr().out
        assert f"$ kdkit {' '.join(argv)}\n{out}" in docs, out


def test_flags_come_from_each_builders_options_model(capsys):
    from kdkit.plugins.tasks.clone.builder import CloneBuildOptions
    from kdkit.plugins.tasks.defect.builder import DefectBuildOptions

    for task, model in (("clone", CloneBuildOptions), ("defect", DefectBuildOptions)):
        assert _run(["data", "build", task, "--help"]) == 0
        flat = " ".join(capsys.readouterr().out.split())
        for name, info in model.model_fields.items():
            flag = "--from" if name == "sources" else "--" + name.replace("_", "-")
            assert flag in flat and " ".join(info.description.split()) in flat
    assert _run(["data", "build", "clone", "--help"]) == 0
    assert "--kinds" not in capsys.readouterr().out  # only the task's own builder's flags


def test_bad_flag_values_exit_2_naming_the_option(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert _run(["data", "build", "defect", "--kinds", "off_by_one", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "kinds" in err and "unknown mutation kind" in err and "Traceback" not in err
    assert _run(["data", "build", "exception", "--labels", "top-x", "--out", out]) == 2
    assert "top-K" in capsys.readouterr().err
    assert _run(["data", "build", "clone", "--seed", "one", "--out", out]) == 2  # argparse: int
    assert "invalid int value" in capsys.readouterr().err
    assert _run(["data", "build", "defct", "--out", out]) == 2
    assert "did you mean 'defect'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_task_without_a_builder_is_told_so(monkeypatch, capsys):
    import kdkit.discovery as discovery
    from tests.engine import tinyplug

    real = discovery.load_plugins
    monkeypatch.setattr(
        discovery,
        "load_plugins",
        lambda: real(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)]),
    )
    assert _run(["data", "build", "--help"]) == 0
    assert "tiny           tiny  (no offline builder)" in capsys.readouterr().out
    assert _run(["data", "build", "tiny", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "the tiny task has no offline builder" in err
    assert "tasks that build offline: clone, defect, exception" in err
