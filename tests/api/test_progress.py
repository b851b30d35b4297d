"""Progress output: a tqdm bar on a terminal, occasional plain lines (never '\\r') elsewhere."""

from __future__ import annotations

import io

from kdkit.progress import PlainProgress, format_seconds, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_plain_lines_a_terminal_gets_tqdm():
    plain = progress_bar(total=3, file=io.StringIO(), interval=5.0)
    assert isinstance(plain, PlainProgress) and plain.interval == 5.0
    bar = progress_bar(total=3, file=Terminal(), interval=5.0)  # tqdm is not given interval
    assert type(bar).__module__.startswith("tqdm")
    bar.close()


def test_plain_lines_count_rate_eta_and_postfix_without_carriage_returns():
    out = io.StringIO()
    bar = PlainProgress(total=4, desc="train", unit="step", file=out, interval=0.0)
    bar.start -= 10.0  # as if 10 s had passed: 2 steps -> 5 s/step, 2 left -> ETA 10 s
    bar.update(2)
    bar.set_postfix(loss="0.5000")
    bar.update(0)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 2/4 (50%) 5.0 s/step, elapsed 0:00:10, ETA 0:00:10"
    assert lines[1].endswith("ETA 0:00:10, loss=0.5000")
    assert len(lines) == 2  # close() prints nothing new: nothing moved since the last line
    assert "\r" not in out.getvalue()


def test_lines_are_rate_limited_and_the_last_one_always_comes():
    out = io.StringIO()
    with PlainProgress(total=100, desc="d", file=out, interval=3600) as bar:
        for _ in range(100):
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d: 100/100 (100%)")


def test_disabled_prints_nothing_and_a_resumed_bar_counts_from_its_start():
    out = io.StringIO()
    with PlainProgress(total=5, file=out, disable=True) as bar:
        bar.update(5)
    assert out.getvalue() == ""
    resumed = PlainProgress(total=10, initial=6, file=out, interval=0.0)
    resumed.close()  # nothing done in this process: no line
    assert out.getvalue() == ""
    assert format_seconds(3725.4) == "1:02:05"


def test_fast_units_show_units_per_second():
    out = io.StringIO()
    bar = PlainProgress(total=None, desc="rows", file=out, interval=0.0)
    bar.start -= 2.0
    bar.update(10)
    assert out.getvalue().startswith("rows: 10 5.00 it/s, elapsed 0:00:02")
    assert "ETA" not in out.getvalue()  # no total, no ETA
