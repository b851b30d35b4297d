"""Fixtures of the distributed tests: one 2-process torchrun launch shared by the whole module.

Starting two Python processes that import torch costs seconds on a busy 2-core machine, so the
launch (``worker.py``) runs every distributed part once and the tests compare its results
with single-process computations made here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
#: Seconds the whole 2-process launch may take before the test fails (never hang CI).
LAUNCH_TIMEOUT_S = 420


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the rendezvous binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, env: dict[str, str], timeout: float = LAUNCH_TIMEOUT_S):
    """``python -m torch.distributed.run --nproc_per_node 2`` on 127.0.0.1 with ``args``."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def dist_plugins():
    """kdkit's own plugins plus the tiny task and teacher (as the worker loads them)."""
    from kdkit.discovery import load_plugins
    from tests.engine import tinyplug

    return load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """Run ``worker.py`` on 2 processes once; returns ``(out_dir, env)``."""
    from .worker import RUN_A

    out = tmp_path_factory.mktemp("dist")
    env = {
        **os.environ,
        "KDKIT_CACHE": str(out / "kdkit-cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(HERE.parents[1]),
    }
    # the CLI part: the documented launch `torchrun ... -m kdkit run FILE` on a run file
    (out / "cli.yaml").write_text(
        "seed: 3\n"
        f"output_dir: {out / 'run-cli'}\n"
        "task: tiny\nteacher: tiny-teacher\n"
        "student: {name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16, dropout: 0}\n"
        "method: {name: kd, temperature: 2}\n"
        "training: {epochs: 2, batch_size: 5, lr: 0.003, max_length: 64, device: cpu,"
        " save_every: 2, distributed: ddp}\n"
        "reporters: [jsonl]\n"
    )
    assert "training.batch_size=5" in RUN_A  # the CLI file is run A's configuration
    proc = torchrun(str(HERE / "worker.py"), str(out), env=env)
    if proc.returncode != 0:
        pytest.fail(
            f"the 2-process launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return out, env
