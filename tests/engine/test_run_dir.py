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
        assert holds_progress(tmp_path)
        f.unlink()
    assert not holds_progress(tmp_path)
