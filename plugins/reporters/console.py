"""Built-in reporter ``console``: evaluation results and the summary on the terminal.

Per-step progress (throughput, ETA) is drawn by the engine's progress bar; this reporter prints
what should stay in the scroll-back: each evaluation and the final summary table.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from kdkit.api import Options, Reporter, RunInfo
from kdkit.hookspecs import hookimpl


class ConsoleOptions(Options):
    """Options of the console reporter."""

    stream: str = Field("stderr", pattern="^(stdout|stderr)$", description="where to print")


class ConsoleReporter(Reporter):
    """Prints evaluations and the summary."""

    def __init__(self, options: ConsoleOptions, context: Any = None) -> None:
        self.options = options

    @property
    def _out(self):
        return sys.stdout if self.options.stream == "stdout" else sys.stderr

    def evaluation(self, run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"[step {step}] {split}: {shown}", file=self._out)

    def finish(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
        table = summary.get("table")
        if table:
            print(table, file=self._out)


@hookimpl
def register_reporters(register):
    register(
        "console",
        ConsoleReporter,
        config=ConsoleOptions,
        description="evaluations and the summary table on the terminal",
    )
