"""Installing an outside package the way a user would: ``pip install`` into a folder of its own.

The meta and task tests prove the outsider's path (a third-party plugin, student or task, found
through its entry points) with this one helper.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def pip_install(src: Path, target: Path) -> dict[str, str]:
    """``pip install --no-deps --target TARGET SRC``; returns an environment that sees TARGET."""
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), path])}
