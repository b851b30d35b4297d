"""``kdkit.cli.main(ARGS)`` with the tiny test plugins installed, in a fresh process.

Usage: ``python run_cli_tiny.py ARGS...`` (the tests redirect its stdout and stderr to files).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kdkit.cli import main, run
from kdkit.discovery import load_plugins
from tests.engine import tinyplug

if __name__ == "__main__":
    plugins = load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])
    run.load_plugins = lambda: plugins  # what `kdkit run` would find with the tiny plugin installed
    sys.exit(main(sys.argv[1:]))
