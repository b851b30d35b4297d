"""Real ``kdkit run`` subprocesses over the tiny task, with the tiny plugin installed as a
distribution (so it is found through entry points, exactly as a third-party plugin is)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.core.conftest import make_distribution

ROOT = Path(__file__).resolve().parents[2]

RUN_FILE = """\
seed: 3
output_dir: {out}
task: tiny
teacher: tiny-teacher
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {{name: {method}}}
training: {{epochs: 1, batch_size: 8, lr: 0.003, max_length: 64, device: cpu}}
reporters: [jsonl]
"""


def tiny_env(tmp_path: Path, *paths: Path | str, **variables: str) -> dict[str, str]:
    """The environment of a subprocess that sees the tiny plugin (and ``paths``) installed."""
    dist = tmp_path / "tiny-dist"
    if not dist.exists():
        make_distribution(dist, "kdkit-tiny-test", {"tiny-test": "tests.engine.tinyplug"}, {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDKIT_")}
    env["KDKIT_CACHE"] = os.environ.get("KDKIT_CACHE", str(tmp_path / "cache"))
    parts = [*map(str, paths), str(dist), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env.update(variables)
    return env


def run_file(tmp_path: Path, method: str) -> Path:
    """A one-epoch tiny run file (GRU student, tiny teacher) using ``method``."""
    path = tmp_path / f"{method}.yaml"
    path.write_text(RUN_FILE.format(out=tmp_path / f"run-{method}", method=method))
    return path


def kdkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m kdkit ARGS`` in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "kdkit", *args], capture_output=True, text=True, env=env, timeout=600
    )
