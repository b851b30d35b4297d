"""``kdkit profile``: the regions, the driver's invariants, the comparison, the bad inputs."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from kdkit.errors import KdkitError
from kdkit.profiling.driver import ProfileOptions, check_options, parse_impls, profile_run
from kdkit.profiling.regions import REGIONS, RegionRecorder, recording, region
from kdkit.profiling.report import render
from tests.engine.conftest import plugins, tiny_config  # noqa: F401  (the plugins fixture)

#: one thread: the shared test machine's spin-waiting thread pools would swamp a 2-thread step
TINY = ("training.num_threads=1",)


def test_region_is_free_without_a_profiler():
    """No profiler, no recorder: the one shared nullcontext (nothing allocated, nothing timed)."""
    assert region("data") is region("backward")
    assert isinstance(region("data"), contextlib.nullcontext)


def test_region_is_a_named_range_under_the_profiler():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with region("student_forward"):
            torch.ones(4, 4) @ torch.ones(4, 4)
    names = {e.key for e in prof.key_averages()}
    assert "kdkit/student_forward" in names
    assert "aten::mm" in names


def test_recorder_times_each_closed_range():
    rec = RegionRecorder(sample_memory=True)
    with recording(rec):
        for _ in range(3):
            with region("optimizer"):
                pass
    assert len(rec.times["optimizer"]) == 3
    assert all(t >= 0 for t in rec.times["optimizer"])
    assert rec.rss_peak > 0  # sampled from /proc at the edges
    assert region("optimizer") is region("data")  # uninstalled again


class _FakeEvent:
    """Stands in for torch.cuda.Event on a CPU machine: a clock reading taken at record()."""

    clock = iter(range(0, 10_000, 5))  # ms: 0, 5, 10, ...

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t: int | None = None

    def record(self) -> None:
        self.t = next(self.clock)

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert self.t is not None and end.t is not None
        return float(end.t - self.t)


def test_recorder_resolves_cuda_events_after_one_synchronise(monkeypatch):
    """GPU path: regions are timed by events recorded at their edges, resolved (ms -> s) once."""
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    rec = RegionRecorder(cuda_events=True)
    with recording(rec):
        with region("data"):
            pass
        with region("backward"):
            pass
        assert rec.times == {}  # nothing read before the resolve
        times = rec.resolve()
    assert times == {"data": [0.005], "backward": [0.005]}
    assert len(syncs) == 1


@pytest.fixture(scope="module")
def tiny_profile(plugins, tmp_path_factory):  # noqa: F811
    """One profile of the tiny KD run (reference kernels), 4 measured steps."""
    root = tmp_path_factory.mktemp("profile")
    resolved = tiny_config(plugins, root / "run", *TINY, "kernels.impl=reference")
    summary = profile_run(resolved, plugins, ProfileOptions(steps=4, warmup=1, out=root / "out"))
    return root, summary


def test_profile_writes_summary_trace_and_plot(tiny_profile):
    root, summary = tiny_profile
    out = root / "out"
    on_disk = json.loads((out / "profile.json").read_text())
    assert on_disk["steps"] == 4 and on_disk["results"][0]["impl"] == "reference"
    trace = json.loads((out / "trace-reference.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {f"kdkit/{r}" for r in REGIONS} <= names  # every region shows in the trace
    assert (out / "region-shares.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (root / "run").exists()  # nothing was written into the run's output_dir


def test_regions_add_up_to_the_measured_step(tiny_profile):
    """The regions do not overlap (their sum never exceeds the step) and leave little outside."""
    _, summary = tiny_profile
    r = summary["results"][0]
    assert set(r["regions"]) == set(REGIONS)  # the tiny teacher is cached: a cache read
    assert summary["teacher_signal"] == "cache"
    total = sum(reg["ms_per_step"] for reg in r["regions"].values())
    step = r["step_ms"]["mean"]
    assert total <= step * 1.001
    assert total >= 0.95 * step, r["regions"]  # "within a few percent"
    assert r["coverage"] == pytest.approx(total / step)
    assert r["unattributed_ms_per_step"] == pytest.approx(step - total)
    assert r["loss_share"] == pytest.approx(r["regions"]["loss_forward"]["ms_per_step"] / step)
    assert len(r["step_ms"]["all"]) == 4 and len(r["losses"]) == 4


def test_profile_reports_dispatch_operators_and_memory(tiny_profile):
    _, summary = tiny_profile
    r = summary["results"][0]
    assert r["dispatch"] == {"kd_loss": "reference"}
    ops = r["top_operators"]
    assert ops and not any(op["name"].startswith("kdkit/") for op in ops)
    times = [op["self_ms_per_step"] for op in ops]
    assert times == sorted(times, reverse=True)
    assert r["memory"]["rss_peak_bytes"] >= r["memory"]["rss_start_bytes"] > 0
    text = render(summary)
    assert text.splitlines()[-1].startswith("step (measured)")  # the region table is printed last
    assert "kd_loss -> reference" in text


def test_compare_impl_under_the_interpreter(plugins, tmp_path, monkeypatch):  # noqa: F811
    """reference and triton side by side: the same steps give the same losses; the output says
    the interpreter's timings mean nothing."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("KDKIT_KERNEL_IMPL", raising=False)
    pytest.importorskip("triton")
    resolved = tiny_config(plugins, tmp_path / "run", *TINY)
    options = ProfileOptions(steps=2, warmup=1, impls=["reference", "triton"], out=tmp_path / "p")
    summary = profile_run(resolved, plugins, options)
    ref, tri = summary["results"]
    assert (ref["impl"], tri["impl"]) == ("reference", "triton")
    assert ref["dispatch"] == {"kd_loss": "reference"} and tri["dispatch"] == {"kd_loss": "triton"}
    assert tri["losses"] == pytest.approx(ref["losses"], rel=1e-4)  # same weights, same batches
    (ratio,) = summary["ratios"]
    assert ratio["step_time"] == pytest.approx(tri["step_ms"]["mean"] / ref["step_ms"]["mean"])
    text = render(summary)
    assert "mean nothing" in text
    header = [line for line in text.splitlines() if line.startswith("region ")][-1]
    assert "reference ms" in header and "triton ms" in header
    assert (tmp_path / "p" / "trace-triton.json").is_file()


@pytest.mark.parametrize("steps, warmup", [(0, 1), (-3, 1), (2, -1)])
def test_bad_step_counts(steps, warmup):
    with pytest.raises(KdkitError, match="--steps|--warmup"):
        check_options(ProfileOptions(steps=steps, warmup=warmup), torch.device("cpu"))


def test_triton_that_cannot_run_here(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("KDKIT_KERNEL_IMPL", raising=False)
    with pytest.raises(KdkitError, match="Triton implementation cannot run on cpu"):
        check_options(ProfileOptions(impls=["reference", "triton"]), torch.device("cpu"))


def test_capture_step_needs_cuda():
    with pytest.raises(KdkitError, match="CUDA profiler"):
        check_options(ProfileOptions(capture_step=True), torch.device("cpu"))


def test_parse_impls():
    assert parse_impls("reference, triton") == ["reference", "triton"]
    for bad in ("referense", "", "reference,reference"):
        with pytest.raises(KdkitError):
            parse_impls(bad)


def test_never_writes_into_a_run_directory(plugins, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "summary.json").write_text("{}\n")
    before = sorted(p.name for p in run_dir.iterdir())
    resolved = tiny_config(plugins, run_dir, *TINY)
    with pytest.raises(KdkitError, match="run directory"):
        profile_run(resolved, plugins, ProfileOptions(steps=1, warmup=0, out=run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    with pytest.raises(KdkitError, match="neither empty nor an earlier profile"):
        profile_run(resolved, plugins, ProfileOptions(steps=1, warmup=0, out=other))


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from kdkit.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_cli_bad_inputs_exit_2(tmp_path, capsys, monkeypatch):
    code, err = _cli(["profile", "--steps", "0"], capsys)
    assert code == 2 and "--steps must be at least 1" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: exception\nstudent: transformer\nmethod: {name: kd, temprature: 2}\n")
    code, err = _cli(["profile", str(bad), "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "temprature" in err and "Traceback" not in err
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("KDKIT_KERNEL_IMPL", raising=False)
    code, err = _cli(
        [
            "profile",
            "--set",
            "training.device=cpu",
            "--compare-impl",
            "reference,triton",
            "--out",
            str(tmp_path / "q"),
        ],
        capsys,
    )
    assert code == 2 and "Triton implementation cannot run" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
