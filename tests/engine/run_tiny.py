"""Run the tiny configuration in a separate process (the kill-and-resume test kills it).

Usage: ``python run_tiny.py RUN_DIR [--resume] [KEY=VALUE ...]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kdkit.discovery import load_plugins
from kdkit.engine.runner import run_once
from tests.engine import tinyplug
from tests.engine.conftest import tiny_config

if __name__ == "__main__":
    run_dir, args = sys.argv[1], sys.argv[2:]
    resume = "--resume" in args
    overrides = [a for a in args if a != "--resume"]
    plugins = load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])
    resolved = tiny_config(plugins, run_dir, *overrides)
    run_once(resolved, plugins, resume=run_dir if resume else None, progress=False)
