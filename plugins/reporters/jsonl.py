"""Built-in reporter ``jsonl``: every step and evaluation as one JSON line in the run directory."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from kdkit.api import Options, Reporter, RunInfo
from kdkit.hookspecs import hookimpl


class JsonlOptions(Options):
    """Options of the JSONL reporter."""

    filename: str = Field("metrics.jsonl", description="file name inside the run directory")
    every: int = Field(1, ge=1, description="write one training step in this many")


class JsonlReporter(Reporter):
    """Appends ``{"event": "step"|"eval"|"end", ...}`` records to ``RUN_DIR/metrics.jsonl``.

    The file is opened in append mode so that a resumed run continues the same file.
    """

    def __init__(self, options: JsonlOptions, context: Any = None) -> None:
        self.options = options
        self._path: str | None = None

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._path is None:
            return
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def start(self, run: RunInfo) -> None:
        os.makedirs(run.run_dir, exist_ok=True)
        self._path = os.path.join(run.run_dir, self.options.filename)
        resumed = getattr(run, "resumed_step", None)
        if resumed is not None and os.path.exists(self._path):
            _truncate(self._path, resumed)

    def step(self, run: RunInfo, step: int, record: Mapping[str, float]) -> None:
        if step % self.options.every == 0:
            self._write({"event": "step", "step": step, **record})

    def evaluation(self, run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
        self._write({"event": "eval", "step": step, "split": split, **metrics})

    def finish(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
        self._write({"event": "end", **{k: v for k, v in summary.items() if k != "table"}})


def _truncate(path: str, step: int) -> None:
    """Keep the records of steps ``<= step`` (a resume computes the later ones again, so they
    would be repeated); a torn last line is dropped too. Rewritten atomically."""
    kept = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") != "end":
                if int(record.get("step", 0)) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)


@hookimpl
def register_reporters(register):
    register(
        "jsonl",
        JsonlReporter,
        config=JsonlOptions,
        description="steps and evaluations as JSON lines in the run directory",
    )
