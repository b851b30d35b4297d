"""Tiny real artefacts, built once per session, and the corruptions the fault corpus applies.

:func:`build_artefacts` makes, through the real ``kdkit run`` (in-process):

* ``run`` — a KD run over the tiny task (GRU student, tiny teacher, checkpoints every 2 steps):
  ``checkpoints/last`` and ``checkpoints/previous``, ``best/model``, ``last/model``, metrics;
  its cache gets teacher-output entries (train, test) and the student's tokenizer;
* ``cached`` — a KD run over the ``defect`` task read from a JSONL ``data_dir``, with a tiny
  ``code-teacher``: its cache gets a dataset cache entry (Arrow), a cached teacher, two
  tokenizers (the teacher's, the student's) and teacher-output entries.

:func:`corruptions` lists, for one file, the damage a disk, a copy or a hostile user can do:
truncations, single bit flips at several offsets (inside the safetensors header and inside the
tensor data), garbled JSON, deletion.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

RUN_YAML = """\
seed: 3
output_dir: {out}
task: tiny
teacher: tiny-teacher
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {{name: kd, temperature: 2}}
training: {{epochs: 2, batch_size: 8, lr: 0.003, max_length: 64, device: cpu, save_every: 2,
  baselines: false}}
reporters: [jsonl]
"""

CACHED_YAML = """\
seed: 3
output_dir: {out}
task: {{name: defect, data_dir: {data}}}
teacher:
  name: code-teacher
  vocab_size: 300
  hidden_size: 16
  num_layers: 1
  num_heads: 1
  training: {{epochs: 1, batch_size: 8, lr: 0.001}}
student: {{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16}}
method: {{name: kd, temperature: 2}}
training: {{epochs: 1, batch_size: 8, lr: 0.003, max_length: 64, device: cpu, baselines: false}}
reporters: [jsonl]
"""


@dataclass
class Artefacts:
    """Where the session's artefacts are (read-only for the tests: copy before corrupting)."""

    root: Path
    run_dir: Path  # the tiny KD run
    run_cache: Path  # its cache
    cached_yaml: Path  # the defect + code-teacher run file (output_dir in root)
    cached_cache: Path  # the cache that run filled (datasets, teachers, tokenizers, outputs)

    def cache_entry(self, kind: str) -> Path:
        """The one entry of ``kind`` in the defect run's cache (the first, sorted)."""
        found = sorted(
            p for p in (self.cached_cache / kind).iterdir() if not p.name.startswith(".")
        )
        return found[0]


def tiny_plugins():
    """kdkit's plugins plus the tiny task, teacher and methods of the engine tests."""
    from kdkit.discovery import load_plugins
    from tests.engine import tinyplug

    return load_plugins(distributions={"kdkit"}, extra=[("tiny-test", tinyplug)])


@contextlib.contextmanager
def environment(cache: Path, plugins) -> Iterator[None]:
    """``KDKIT_CACHE=cache`` and every ``load_plugins`` the CLI calls returning ``plugins``."""
    import kdkit.cli.run as cli_run
    import kdkit.discovery as discovery

    saved = os.environ.get("KDKIT_CACHE"), cli_run.load_plugins, discovery.load_plugins
    os.environ["KDKIT_CACHE"] = str(cache)
    cli_run.load_plugins = discovery.load_plugins = lambda *a, **k: plugins
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("KDKIT_CACHE", None)
        else:
            os.environ["KDKIT_CACHE"] = saved[0]
        cli_run.load_plugins, discovery.load_plugins = saved[1], saved[2]


@dataclass
class CliResult:
    """What one in-process ``kdkit`` call returned and printed."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def kdkit(*args: str) -> CliResult:
    """``kdkit ARGS`` in this process (``kdkit.cli.main``), stdout and stderr captured.

    An exception that escapes ``main`` is what a user would see as a traceback: it is returned
    as exit code 1 with the traceback text, so the corpus's "no Traceback" assertion sees it.
    """
    import traceback

    from kdkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except BaseException:  # the corpus reports it as the traceback it is
            err.write(traceback.format_exc())
            code = 1
    return CliResult(code, out.getvalue(), err.getvalue())


def defect_rows(n: int = 48) -> list[dict]:
    """``n`` rows in the Devign JSONL format: real stdlib functions, labels alternating."""
    from kdkit.testing.tiny import tiny_examples

    texts = [t for t, _ in tiny_examples(n)]
    return [
        {"project": "stdlib", "commit_id": "0" * 40, "target": i % 2, "func": t, "idx": i}
        for i, t in enumerate(texts)
    ]


def build_artefacts(root: Path) -> Artefacts:
    """Build the session's artefacts under ``root`` (see the module doc)."""
    plugins = tiny_plugins()
    run_dir, run_cache = root / "run", root / "run-cache"
    (root / "run.yaml").write_text(RUN_YAML.format(out=run_dir))
    with environment(run_cache, plugins):
        r = kdkit("run", str(root / "run.yaml"), "--quiet")
    assert r.code == 0, r.text
    data = root / "defect-data"
    data.mkdir()
    rows = defect_rows()
    for name, part in (("train", rows[:32]), ("valid", rows[32:40]), ("test", rows[40:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in part))
    cached_yaml, cached_cache = root / "cached.yaml", root / "cached-cache"
    cached_yaml.write_text(CACHED_YAML.format(out=root / "cached-run", data=data))
    with environment(cached_cache, plugins):
        r = kdkit("run", str(cached_yaml), "--quiet")
    assert r.code == 0, r.text
    return Artefacts(root, run_dir, run_cache, cached_yaml, cached_cache)


# ---------------------------------------------------------------------------- corruptions


@dataclass(frozen=True)
class Corruption:
    """One kind of damage to one file: ``apply(path)`` damages it in place (or deletes it)."""

    name: str
    apply: Callable[[Path], None]


def _truncate(fraction: float) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return apply


def _flip(offset: Callable[[bytes], int], bit: int = 0) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = bytearray(path.read_bytes())
        i = offset(bytes(data)) % len(data)
        data[i] ^= 1 << bit
        path.write_bytes(bytes(data))

    return apply


def _write(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def safetensors_data_start(data: bytes) -> int:
    """Where the tensor bytes start in a safetensors file (after the 8-byte length + header)."""
    return 8 + struct.unpack("<Q", data[:8])[0]


def corruptions(path: Path) -> list[Corruption]:
    """The damage applied to ``path``: the common kinds, plus format-specific ones."""
    found = [
        Corruption("truncated-half", _truncate(0.5)),
        Corruption("truncated-empty", _truncate(0.0)),
        Corruption("deleted", lambda p: p.unlink()),
        Corruption("flip-first-byte", _flip(lambda d: 0)),
        Corruption("flip-last-byte", _flip(lambda d: len(d) - 1, bit=3)),
    ]
    if path.suffix == ".safetensors":
        found += [
            Corruption("flip-in-header", _flip(lambda d: 8 + (safetensors_data_start(d) - 8) // 2)),
            Corruption("flip-tensor-data-start", _flip(safetensors_data_start, bit=6)),
            Corruption(
                "flip-tensor-data-middle",
                _flip(lambda d: (safetensors_data_start(d) + len(d)) // 2, bit=1),
            ),
            Corruption("truncated-header-only", _truncate_to(lambda d: 8)),
        ]
    elif path.suffix == ".json":
        found += [
            Corruption("garbled", _write('{"this is": not json')),
            Corruption("null", _write("null")),
            Corruption("empty-object", _write("{}")),
        ]
    elif path.suffix == ".arrow":
        found += [Corruption("flip-middle", _flip(lambda d: len(d) // 2, bit=5))]
    return found


def _truncate_to(size: Callable[[bytes], int]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: size(data)])

    return apply


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (the lock file aside): what a
    failed command must leave exactly as it found it."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".kdkit-run.lock"
    }


def copy_tree(source: Path, target: Path) -> Path:
    """A private copy of an artefact tree for one case."""
    shutil.copytree(source, target, symlinks=True)
    return target
