"""A run directory is never overwritten once it holds results, but a failed start is reusable."""

from pathlib import Path

from kdkit.engine.runner import holds_progress


def test_failed_start_holds_no_progress(tmp_path: Path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "versions.json").write_text("{}")
    assert not holds_progress(tmp_path)


def test_any_result_counts_as_progress(tmp_path: Path):
    for name in ("checkpoints", "best", "last"):
        d = tmp_path / name
        d.mkdir()
        assert holds_progress(tmp_path)
        d.rmdir()
    for name in ("metrics.jsonl", "summary.json"):
        f = tmp_path / name
        f.write_text("{}")
        (tmp_path / "checkpoints").mkdir()  # metrics/summary beside a checkpoint: a real run
        assert holds_progress(tmp_path)
        (tmp_path / "checkpoints").rmdir()
        f.unlink()
    (tmp_path / "summary.json").write_text('{"status": "finished"}')
    assert holds_progress(tmp_path)  # a finished run, even without its checkpoints
    (tmp_path / "summary.json").unlink()
    assert not holds_progress(tmp_path)


def test_an_attempt_that_stopped_before_its_first_checkpoint_holds_no_progress(tmp_path: Path):
    """A NaN (or a kill) before the first checkpoint leaves nothing to resume: a new run may
    start there (issue 13: it used to be a dead end, refused both ways)."""
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "metrics.jsonl").write_text('{"event": "step", "step": 1}\n')
    assert not holds_progress(tmp_path)
    (tmp_path / "summary.json").write_text('{"status": "stopped", "step": 2}')
    assert not holds_progress(tmp_path)
    (tmp_path / "summary.json").write_text("{}")  # a summary kdkit cannot read: kept, refused
    assert holds_progress(tmp_path)
