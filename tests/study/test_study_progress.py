"""`kdkit study`'s progress over all its runs: a line per finished run with the ETA (log files)."""

from __future__ import annotations

import re

from kdkit.study.runner import run_study

from .test_runner import _study


def test_a_line_per_run_with_the_eta_over_the_runs_left(
    write_grid, tmp_path, study_plugins, capsys
):
    grid, runs = _study(write_grid, tmp_path, study_plugins)

    def fake(run, resume):
        (run.run_dir / "summary.json").write_text("{}")

    out = run_study(grid, runs, fake, max_runs=3, log=lambda _m: None, progress=True)
    assert len(out.ran) == 3
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("study tiny-study:")]
    # 3 of the 4 runs were asked for (max_runs): the bar counts those, one line after each
    assert [re.match(r"study tiny-study: (\d/\d) \((\d+)%\)", line).groups() for line in lines] == [
        ("1/3", "33"),
        ("2/3", "67"),
        ("3/3", "100"),
    ]
    assert all("ETA " in line for line in lines[:2]) and "ETA" not in lines[2]
    assert "\r" not in err
    # the remaining run: a new bar over what is left
    run_study(grid, runs, fake, log=lambda _m: None, progress=True)
    assert "study tiny-study: 1/1 (100%)" in capsys.readouterr().err


def test_no_progress_unless_asked(write_grid, tmp_path, study_plugins, capsys):
    grid, runs = _study(write_grid, tmp_path, study_plugins)
    run_study(
        grid,
        runs,
        lambda r, _res: (r.run_dir / "summary.json").write_text("{}"),
        log=lambda _m: None,
    )
    assert capsys.readouterr().err == ""
