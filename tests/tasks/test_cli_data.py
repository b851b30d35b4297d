"""``kdkit data build`` / ``kdkit data info`` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil

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
    rc = main(["data", "build", "exception", "--from", str(src), "--out", str(out),
               "--min-examples", "20", "--labels", "top-5", "--quiet"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "validation" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped"]["syntax_error"] == 1 and stats["skipped"]["not_utf8"] == 1
    assert len(stats["options"]["labels"]) == 5
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
