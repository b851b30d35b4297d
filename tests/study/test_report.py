"""Reports from synthetic run directories with hand-computed aggregates."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from kdkit.cli import main
from kdkit.study.report import write_report
from kdkit.study.results import collect
from kdkit.study.tables import build_cells

TEACHER = {"name": "code", "parameters": 100_000_000, "test": {"top1": 0.80, "top3": 0.9}}
SCORES = {  # (student, method) -> test top1 per seed 0, 1, 2
    ("gru-1.5M", "ft"): [0.60, 0.62, 0.64],
    ("gru-1.5M", "kd"): [0.66, 0.68, 0.70],
    ("gru-1.5M", "ckd"): [0.70, 0.70, 0.73],
    ("gru-7M", "ft"): [0.70, 0.70, 0.70],
    ("gru-7M", "kd"): [0.72, 0.74, 0.76],
    ("gru-7M", "ckd"): [0.69, 0.70, 0.68],
}
PARAMS = {"gru-1.5M": 1_500_000, "gru-7M": 7_000_000}


def write_run(
    root: Path, student: str, method: str, seed: int, score: float, *, status: str = "finished"
) -> Path:
    """A run directory as the engine and the study leave it (summary + study point)."""
    teacher = "none" if method == "ft" else "code"
    run_id = f"exc__{teacher}__{student}__{method}__seed{seed}"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    labels = {
        "task": "exc",
        "teacher": teacher,
        "student": student,
        "method": method,
        "seed": str(seed),
    }
    (run_dir / "study_point.json").write_text(json.dumps({"run_id": run_id, "labels": labels}))
    summary = {
        "status": status,
        "task": "exception",
        "method": method,
        "seed": seed,
        "headline_metric": "top1",
        "student": {"name": student, "family": "gru", "parameters": PARAMS[student]},
        "teacher": None if method == "ft" else TEACHER,
        "test": {"top1": score, "top3": min(1.0, score + 0.1)},
        "steps": 10,
        "train_seconds": 2.0,
        "teacher_signal": None if method == "ft" else "cache",
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def write_study(root: Path, *, efficiency: bool = True) -> Path:
    for (student, method), scores in SCORES.items():
        for seed, score in enumerate(scores):
            write_run(root, student, method, seed, score)
    manifest = {
        "name": "synthetic",
        "axes": {
            "task": ["exc"],
            "teacher": ["code"],
            "student": ["gru-1.5M", "gru-7M"],
            "method": ["ft", "kd", "ckd"],
            "seed": [0, 1, 2],
        },
        "runs": [],
    }
    (root / "study.json").write_text(json.dumps(manifest))
    if efficiency:
        models = [
            {
                "task": "exc",
                "label": "code",
                "kind": "teacher",
                "parameters": 100_000_000,
                "latency_ms": 50.0,
                "throughput": 40.0,
                "throughput_batch": 32,
                "seq_len": 128,
                "flops_per_example": 2.0e10,
                "peak_memory_mb": 400.0,
            },
            {
                "task": "exc",
                "label": "gru-1.5M",
                "kind": "student",
                "parameters": 1_500_000,
                "latency_ms": 5.0,
                "throughput": 800.0,
                "throughput_batch": 32,
                "seq_len": 128,
                "peak_memory_mb": 0.0,
            },
            {
                "task": "exc",
                "label": "gru-7M",
                "kind": "student",
                "parameters": 7_000_000,
                "latency_ms": 10.0,
                "throughput": 200.0,
                "throughput_batch": 32,
                "seq_len": 128,
            },
        ]
        (root / "efficiency.json").write_text(json.dumps({"device": "cpu", "models": models}))
    return root


def test_cells_hand_computed(tmp_path):
    root = write_study(tmp_path / "s")
    eff = json.loads((root / "efficiency.json").read_text())
    cells, teachers = build_cells(
        collect([root]), eff, json.loads((root / "study.json").read_text())["axes"]
    )
    assert teachers[("exc", "code")].score == pytest.approx(0.80)
    assert [(c.student, c.method) for c in cells] == list(SCORES)  # grid order
    by = {(c.student, c.method): c for c in cells}
    ft = by[("gru-1.5M", "ft")]
    assert ft.mean == pytest.approx(0.62) and ft.std == pytest.approx(0.02)
    assert ft.baseline and ft.gain_over_ft is None and ft.retention == pytest.approx(77.5)
    ckd = by[("gru-1.5M", "ckd")]
    assert ckd.mean == pytest.approx(0.71) and ckd.std == pytest.approx(0.017320508)
    assert ckd.gain_over_ft == pytest.approx(9.0) and ckd.retention == pytest.approx(88.75)
    assert ckd.params_pct == pytest.approx(1.5) and ckd.speedup == pytest.approx(10.0)
    assert ckd.throughput_ratio == pytest.approx(20.0)
    assert ckd.extra["top3"] == pytest.approx(0.81)
    big = by[("gru-7M", "ckd")]
    assert big.gain_over_ft == pytest.approx(-1.0) and big.speedup == pytest.approx(5.0)
    assert by[("gru-7M", "kd")].std == pytest.approx(0.02)


def test_report_files(tmp_path):
    root = write_study(tmp_path / "s")
    write_run(root, "gru-7M", "kd", 9, 0.1, status="stopped")  # a NaN-stopped run: listed, not used
    partial = root / "runs" / "exc__code__gru-7M__kd__seed5" / "checkpoints" / "last"
    partial.mkdir(parents=True)
    (partial / "state.json").write_text("{}")
    manifest = json.loads((root / "study.json").read_text())
    manifest["runs"] = ["exc__code__gru-7M__kd__seed5"]  # planned, not finished
    (root / "study.json").write_text(json.dumps(manifest))
    out = write_report(root, log=lambda _m: None)
    md = (out / "report.md").read_text()
    assert md.startswith("# Study report: synthetic\n\n18 finished runs")
    assert "- exc__code__gru-7M__kd__seed5: partial" in md
    assert "| gru-1.5M | 1.50M | 1.5 | ckd | 3 | 71.0 ± 1.7 | 88.7 | +9.0 | 10.0x |" in md
    assert "| gru-1.5M | 1.50M | 1.5 | ft | 3 | 62.0 ± 2.0 | 77.5 | – | 10.0x |" in md
    assert "KD above FT: 3 of 4" in md
    assert "smallest student than for the largest: 2 of 2" in md
    assert "exc / code: best method per student — ckd (1), kd (1)" in md
    assert "exc / code: teacher 80.0, +10.0 points over the best FT student." in md
    assert "| exc | code | gru-7M | 7.00M | 70.0 ± 0.0 | 74.0 ± 2.0 (kd) | +4.0 | 1/2 |" in md
    assert "exc__code__gru-7M__kd__seed9: stopped" in md
    assert "| exc | student | gru-1.5M | 1.50M | 128 | – | 5.00 | 800 | < 0.1 | 10.0x |" in md
    assert "| 400.0 | 1.0x |" in md  # the teacher's peak memory
    assert "![score_vs_size](figures/score_vs_size.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html
    assert 'src="figures' not in html  # self-contained
    for fig in ("score_vs_size.png", "score_vs_speedup.png"):
        data = (out / "figures" / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert len(rows) == 6
    kd7 = next(r for r in rows if r["student"] == "gru-7M" and r["method"] == "kd")
    assert float(kd7["mean"]) == pytest.approx(0.74) and kd7["seeds"] == "0 1 2"
    assert float(kd7["gain_over_ft_points"]) == pytest.approx(4.0)
    runs = list(csv.DictReader(io.StringIO((out / "runs.csv").read_text())))
    assert len(runs) == 19
    data = json.loads((out / "results.json").read_text())
    assert len(data["cells"]) == 6 and data["teachers"][0]["score"] == pytest.approx(0.8)


def test_merge_across_copies(tmp_path):
    """Runs split over two machines' study dirs give the same tables as one dir."""
    whole = write_study(tmp_path / "whole")
    a, b = tmp_path / "a", tmp_path / "b"
    for i, run in enumerate(sorted((whole / "runs").iterdir())):
        dest = (a if i % 2 else b) / "runs" / run.name
        shutil.copytree(run, dest)
    shutil.copytree(
        whole / "runs" / "exc__code__gru-7M__kd__seed0", a / "runs" / "dup__x"
    )  # same id
    for d in (a, b):
        shutil.copy(whole / "study.json", d / "study.json")
    shutil.copy(whole / "efficiency.json", a / "efficiency.json")
    one = (write_report(whole, log=lambda _m: None) / "results.csv").read_text()
    merged_out = tmp_path / "merged"
    logged: list[str] = []
    write_report(a, b, out_dir=merged_out, log=logged.append)
    assert (merged_out / "results.csv").read_text() == one
    assert any("already read" in m for m in logged)


def test_cli_report(tmp_path, capsys):
    root = write_study(tmp_path / "s", efficiency=False)
    assert main(["report", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "score_vs_size.png" in out
    assert "score_vs_speedup.png" not in out  # no efficiency measurements: no speed-up figure
    assert main(["report", str(tmp_path / "empty")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished run found" in capsys.readouterr().err


def test_teacher_without_margin_is_flagged(tmp_path):
    from kdkit.study.report import shapes, teacher_margins

    root = write_study(tmp_path / "s")
    cells, _ = build_cells(
        collect([root]), None, json.loads((root / "study.json").read_text())["axes"]
    )
    for c in cells:
        c.teacher_score = 0.65  # below the 7M FT student's 70.0
    kd = [c for c in cells if not c.baseline]
    assert teacher_margins(cells, kd) == {("exc", "code"): (0.65, pytest.approx(-5.0))}
    lines = shapes(cells)
    assert (
        "exc / code: teacher 65.0, -5.0 points over the best FT student — no margin over its "
        "students: nothing for KD to pass on."
    ) in lines
    assert not any(line.startswith("Best retention") for line in lines)  # no teacher margin


def test_markdown_and_html_show_the_same_sections_in_the_same_order_with_the_same_notes(tmp_path):
    import html as html_lib
    import re

    from kdkit.study.report import build_report
    from kdkit.study.report_model import build_model

    root = write_study(tmp_path / "s")
    write_run(root, "gru-7M", "kd", 9, 0.1, status="stopped")  # a "Not in the tables" entry
    eff = json.loads((root / "efficiency.json").read_text())
    eff["notes"] = ["Latency is the median of 32 single-row calls."]
    (root / "efficiency.json").write_text(json.dumps(eff))
    out = write_report(root, log=lambda _m: None)
    model = build_model(build_report([root], out, lambda _m: None))
    md = (out / "report.md").read_text()
    page = html_lib.unescape((out / "report.html").read_text())

    titles = [s.title for s in model.sections if s.title is not None]
    assert titles[0] == "Shapes" and titles[-1] == "Not in the tables"
    assert "Inference (one process, same inputs)" in titles
    assert re.findall(r"^## (.*)$", md, flags=re.M) == titles
    assert re.findall(r"<h2>(.*?)</h2>", page) == titles
    # the same bullets (findings, notes, runs left out) in the same order on both pages
    bullets = [b for s in model.sections for b in s.bullets]
    notes = next(s.bullets for s in model.sections if s.note)
    assert notes == [
        "Measured on cpu (), torch ?, ? threads.",
        "Latency is the median of 32 single-row calls.",
    ]
    assert re.findall(r"^- (.*)$", md, flags=re.M) == bullets
    assert re.findall(r"<li>(.*?)</li>", page) == bullets
    # tables and figures in the same order too
    n_tables = sum(len(s.tables) for s in model.sections)
    assert len(re.findall(r"^\|---", md, flags=re.M)) == page.count("<table>") == n_tables >= 3
    assert [m for m in re.findall(r"!\[(\w+)\]", md)] == re.findall(r'<img alt="(\w+)"', page)
    assert model.intro in md and model.intro in page


def _baselines_entry(majority: float = 0.62, lexical: float = 0.85) -> dict:
    """A summary's ``baselines`` value, as :meth:`kdkit.baselines.Baselines.to_dict` writes it."""
    split = {
        "rows": 100,
        "label_counts": {"OSError": 62, "KeyError": 38},
        "scores": {"majority": majority, "stratified": 0.53, "tfidf_lr": lexical},
        "ci": {"majority": [0.52, 0.71], "stratified": [0.45, 0.60], "tfidf_lr": [0.78, 0.91]},
        "metrics": {},
    }
    return {
        "task": "exception",
        "fingerprint": "fp",
        "headline_metric": "top1",
        "labels": ["OSError", "KeyError"],
        "majority_label": "OSError",
        "splits": {"validation": split, "test": split},
        "tuned": {
            "tfidf_lr": {
                "C": 0.3,
                "word_ngrams": [1, 2],
                "char_ngrams": None,
                "class_weight": None,
                "val_score": 0.8,
                "tried": 40,
            }
        },
        "best_lexical": "tfidf_lr",
        "options": {},
        "seconds": 1.0,
        "version": 2,
        "from_cache": False,
    }


def test_report_shows_baselines_from_the_runs_summaries(tmp_path):
    root = write_study(tmp_path / "s")
    for summary_path in (root / "runs").glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["baselines"] = _baselines_entry()
        summary_path.write_text(json.dumps(summary))
    out = write_report(root, log=lambda _m: None)
    md = (out / "report.md").read_text()
    assert "## Baselines (test split, same metric; chosen on validation)" in md
    assert (
        # an entry written before the best constant existed: no constant column value
        "| exc | top1 | 100 | 62.0 (OSError) | – | 53.0 | 85.0 [78.0, 91.0] | – | "
        "tfidf_lr: C=0.3, "
        "word_ngrams=[1, 2], char_ngrams=None, class_weight=None |"
    ) in md
    assert (
        "- exc / code: teacher 80.0 vs TF-IDF + logistic regression 85.0 (-5.0 points) and "
        "majority class 62.0 — the teacher knows less than a linear model on words: "
        "distillation results here are not informative."
    ) in md
    # FT gru-1.5M averages 62.0: the majority class (within one point); 0.6267... is not
    assert "| gru-1.5M | 1.50M | 1.5 | ft | 3 | 62.0 ± 2.0 (= majority) |" in md
    assert "| gru-1.5M | 1.50M | 1.5 | kd | 3 | 68.0 ± 2.0 | " in md
    assert "exc: 1 of 6 cells at or below the majority class (62.0, 'OSError'; within 1 point" in md
    html = (out / "report.html").read_text()
    assert "the teacher knows less than a linear model on words" in html
    assert "62.0 ± 2.0 (= majority)" in html
    rows = list(csv.DictReader(io.StringIO((out / "baselines.csv").read_text())))
    assert len(rows) == 6  # 2 splits x 3 baselines
    lex = next(r for r in rows if r["split"] == "test" and r["baseline"] == "tfidf_lr")
    assert float(lex["score"]) == 0.85 and float(lex["ci_low"]) == 0.78
    data = json.loads((out / "results.json").read_text())
    assert data["baselines"]["exc"]["splits"]["test"]["scores"]["majority"] == 0.62
    assert "baselines" not in data["runs"][0]  # one copy per task, not one per run


def test_report_reads_baselines_json_for_runs_that_predate_them(tmp_path):
    from kdkit.baselines.runs import RunBaselines
    from kdkit.study.baselines import write_baselines_file

    root = write_study(tmp_path / "s")
    from kdkit.baselines import Baselines

    b = Baselines.from_dict(_baselines_entry(majority=0.5, lexical=0.7))
    write_baselines_file(
        root,
        {
            "exc": RunBaselines(b, None, 1.0),
            "other": RunBaselines(None, "baselines unavailable: x", 0.1),
        },
    )
    out = write_report(root, log=lambda _m: None)
    md = (out / "report.md").read_text()
    assert "| exc | top1 | 100 | 50.0 (OSError) | – | 53.0 | 70.0 [78.0, 91.0] |" in md
    assert (
        "- exc / code: teacher 80.0 vs TF-IDF + logistic regression 70.0 (+10.0 points) and "
        "majority class 50.0." in md
    )
    assert "- other: baselines unavailable: x" in md


def test_figure_helpers_one_unit_short_names_degenerate_panels():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from kdkit.baselines import Baselines
    from kdkit.study.figures import _degenerate, params_label, short, spaced_ticks
    from kdkit.study.tables import Cell

    label = params_label([57_970, 249_000])
    assert [label(57_970), label(249_000)] == ["58K", "249K"]  # not "58K" beside "0.249M"
    label = params_label([57_970, 1_500_000])
    assert [label(57_970), label(1_500_000)] == ["0.058M", "1.5M"]
    assert short("/home/me/runs/teachers/exception-code-teacher-long-name/best") == "best"
    assert short("a-very-long-teacher-label-indeed", 12) == "a-very-long…"
    # 0.7x beside 0.8x and 0.9x beside 1x collided: one of each pair is kept
    assert spaced_ticks([0.66, 0.83, 1.96, 3.8]) == [0.7, 1.0, 2.0, 3.8]
    assert spaced_ticks([0.9, 1.8, 3.3]) == [1.0, 1.8, 3.3]
    assert spaced_ticks([0.04, 2.0]) == [
        1.0,
        2.0,
    ]  # 0.04 rounds to 0.0: no tick (was ZeroDivisionError)
    b = Baselines.from_dict(_baselines_entry(majority=0.675))

    def cell(mean):
        return Cell("clone", "t", "s", "ft", "f1", [0], [mean], "gru", 1, mean, None)

    fig, ax = plt.subplots()
    marked = "clone\n(degenerate: no method above the majority class)"
    assert _degenerate(ax, [cell(0.675), cell(0.68), cell(0.56)], b, "clone") == marked
    assert _degenerate(ax, [cell(0.675), cell(0.70)], b, "clone") == "clone"
    assert _degenerate(ax, [cell(0.675)], None, "clone") == "clone"
    plt.close(fig)


def test_report_written_again_from_its_results_json(tmp_path, capsys):
    from kdkit.study.baselines import write_baselines_file  # noqa: F401 (the file it reads)

    root = write_study(tmp_path / "s")
    first = write_report(root, log=lambda _m: None)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(first / "results.json", copy / "results.json")
    baselines = {"tasks": {"exc": _baselines_entry()}}
    (copy / "baselines.json").write_text(json.dumps(baselines))
    assert main(["report", str(copy / "results.json"), "--quiet"]) == 0
    md = (copy / "report.md").read_text()
    old = (first / "report.md").read_text()
    # the same tables as from the run directories, plus the baselines
    for line in old.splitlines():
        if line.startswith("| gru-7M") or line.startswith("| exc | code"):
            assert line in md
    assert "| exc | top1 | 100 | 62.0 (OSError) |" in md
    again = json.loads((copy / "results.json").read_text())
    assert again["baselines"]["exc"]["majority_label"] == "OSError"
    assert len(again["runs"]) == 18
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "not a kdkit report's results.json" in capsys.readouterr().err
    # the report folder's manifest: a changed number in results.json is refused, named
    assert (first / "kdkit-manifest.json").is_file()
    text = (first / "results.json").read_text()
    (first / "results.json").write_text(text.replace('"seed": 0', '"seed": 9', 1))
    assert main(["report", str(first / "results.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "results.json" in err and "kdkit report" in err and "Traceback" not in err


def test_a_best_constant_that_is_not_the_majority_is_tabulated_marked_and_drawn(tmp_path):
    """F1-like case: majority 'OSError' scores 0.30, always 'KeyError' 0.66 (chosen on
    validation); a cell at 0.66 is marked at the constant, not left unflagged."""
    from kdkit.baselines import Baselines
    from kdkit.study.figures import _reference_lines

    entry = _baselines_entry(majority=0.30)
    for split in entry["splits"].values():
        split["scores"]["constant"] = 0.66
        split["ci"]["constant"] = [0.6, 0.7]
    entry["tuned"]["constant"] = {"label": "KeyError", "val_score": 0.66}
    entry["version"] = 3
    root = write_study(tmp_path / "s")
    for summary_path in (root / "runs").glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["baselines"] = entry
        summary_path.write_text(json.dumps(summary))
    md = (write_report(root, log=lambda _m: None) / "report.md").read_text()
    assert "| exc | top1 | 100 | 30.0 (OSError) | 66.0 (KeyError) | 53.0 |" in md
    assert "or at the best constant prediction, always 'KeyError' (66.0)" in md
    b = Baselines.from_dict(entry)
    from kdkit.study.baselines import trivial_mark

    assert trivial_mark(0.665, b) == "= always 'KeyError'"
    # above the majority but more than a point under the constant: below it, not at it
    assert trivial_mark(0.50, b) == "< always 'KeyError'"
    assert trivial_mark(0.30, b) == "= majority" and trivial_mark(0.10, b) == "< majority"
    assert trivial_mark(0.70, b) is None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    _reference_lines(ax, b)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["majority class", "always 'KeyError'", "lexical: TF-IDF + LR"]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [30.0, 66.0, 85.0]
    plt.close(fig)
