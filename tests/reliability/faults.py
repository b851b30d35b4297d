"""Shared helpers of the config and data fault corpus (tests/reliability/test_*_faults.py).

A fault case runs ``kdkit.cli.main(argv)`` in-process (cheap: one interpreter, plugins loaded
once) and checks what every user error must give: exit status 2, no ``Traceback``, a message
naming the file or option concerned, a bounded message, and the user's files untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "tasks" / "fixtures"

#: A valid run file on built-in components and a tiny data folder; ``{out}``, ``{cache}`` and
#: ``{data}`` are filled in by :func:`base_config`.
BASE = """\
seed: 0
output_dir: {out}
task: {{name: defect, data_dir: {data}}}
teacher: {{name: code-teacher, vocab_size: 300, hidden_size: 16, num_layers: 1, num_heads: 2}}
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {{name: kd, temperature: 4}}
training: {{epochs: 1, batch_size: 4, max_length: 64, device: cpu}}
cache: {{dir: {cache}}}
reporters: [jsonl]
"""

#: Longest message a fault may print (a 4 MB value must never be echoed).
MAX_MESSAGE = 6_000


@dataclass
class Result:
    """What one in-process ``kdkit`` call gave."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def kdkit(*argv: str) -> Result:
    """``kdkit ARGV`` in this process, with stdout and stderr captured."""
    from kdkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    env = os.environ.pop("KDKIT_DEBUG", None)  # a developer's KDKIT_DEBUG=1 must not re-raise
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        if env is not None:
            os.environ["KDKIT_DEBUG"] = env
    return Result(code, out.getvalue(), err.getvalue())


def base_config(tmp: Path, data: Path | None = None) -> str:
    """:data:`BASE` with an output folder and cache under ``tmp`` and the defect fixture data."""
    return BASE.format(out=tmp / "run", cache=tmp / "cache", data=data or FIXTURES / "devign")


def digest(path: Path) -> str | None:
    """sha256 of a file (``None`` when it is missing): "nothing the user gave is overwritten"."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def assert_user_error(result: Result, *names: str) -> None:
    """Exit 2, no traceback, every one of ``names`` in the message, the message bounded."""
    assert result.code == 2, (result.code, result.text[-2000:])
    assert "Traceback" not in result.text, result.text[-3000:]
    assert "kdkit: error:" in result.err, result.text[-2000:]
    for name in names:
        assert name in result.text, (name, result.text[-2000:])
    assert len(result.text) < MAX_MESSAGE, len(result.text)


def python() -> str:
    """The interpreter running the tests (for the few real subprocesses)."""
    return sys.executable
