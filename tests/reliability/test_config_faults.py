"""The fault corpus, configuration half: bad run files and ``--set`` values, each refused by
``kdkit config validate`` *and* by ``kdkit run`` before any work, with exit status 2, no
traceback, a message naming the file or option, and nothing the user gave changed.

Cases: the explicit ones of issue 13 (seeds beyond 64 bits, 5,000 nested ``[``, ``cache.dir`` or
``output_dir`` that is a file or cannot be created, broken ``output_dir`` placeholders, duplicate
keys, absurd ``max_length``/``epochs``/``num_threads``, missing ``pretrain_dirs``, a teacher's
position table, alias bombs, oversized files, thousands of problems, multi-megabyte values),
every numeric training setting with bad values, and hypothesis mutations of a valid file.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdkit import safe_yaml
from tests.reliability.faults import (
    ROOT,
    Result,
    assert_user_error,
    base_config,
    digest,
    kdkit,
    python,
)

Edit = Callable[[str, Path], str]  # (valid run file text, tmp folder) -> the file to try


def _replace(old: str, new: str) -> Edit:
    def edit(text: str, tmp: Path) -> str:
        old_text = old.replace("{tmp}", str(tmp))
        assert old_text in text, old_text
        return text.replace(old_text, new.replace("{tmp}", str(tmp)))

    return edit


def _append(extra: str) -> Edit:
    return lambda text, tmp: text + extra.replace("{tmp}", str(tmp))


def _whole(body: str) -> Edit:
    return lambda text, tmp: body


def _set(key: str, value: str) -> str:
    """A ``--set KEY=VALUE`` argument (``{tmp}`` stands for the case's folder)."""
    return f"{key}={value}"


# (id, edit of the file or None, --set overrides, names the message must contain)
CASES: list[tuple[str, Edit | None, list[str], tuple[str, ...]]] = [
    # -- seeds: torch takes 64 bits; kdkit asks 0 <= seed < 2**63
    ("seed-2**80", None, [_set("seed", str(2**80))], ("seed", "less than")),
    ("seed-2**64", _replace("seed: 0", f"seed: {2**64}"), [], ("run.yaml:1", "seed")),
    ("seed-2**63", _replace("seed: 0", f"seed: {2**63}"), [], ("seed",)),
    ("seed-negative", _replace("seed: 0", "seed: -1"), [], ("seed",)),
    ("seed-float", _replace("seed: 0", "seed: 1.5"), [], ("seed",)),
    ("seed-text", _replace("seed: 0", "seed: zero"), [], ("seed",)),
    ("seed-5000-digits", _replace("seed: 0", "seed: " + "9" * 5000), [], ("run.yaml",)),
    ("teacher-seed-2**70", None, [_set("teacher.seed", str(2**70))], ("teacher.seed",)),
    # -- nesting: 5,000 levels used to raise RecursionError
    ("nested-5000-[", _whole("seed: " + "[" * 5000), [], ("run.yaml", "nested")),
    ("nested-5000-[]", _append("x: " + "[" * 5000 + "]" * 5000 + "\n"), [], ("nested",)),
    ("nested-5000-{", _append("x: " + "{a: " * 5000 + "\n"), [], ("nested",)),
    (
        "nested-block-100",
        _append("".join("  " * i + f"k{i}:\n" for i in range(100))),
        [],
        ("nested",),
    ),
    ("set-nested-5000", None, [_set("seed", "[" * 5000)], ("seed", "nested")),
    # -- the cache and the run directory must be folders that can be created here
    (
        "cache-dir-is-file",
        _replace("dir: {tmp}/cache", "dir: {tmp}/afile"),
        [],
        ("cache.dir", "afile"),
    ),
    ("cache-dir-under-file", None, [_set("cache.dir", "{tmp}/afile/sub")], ("cache.dir", "afile")),
    ("cache-dir-proc", None, [_set("cache.dir", "/proc/kdkit-x")], ("cache.dir", "/proc")),
    (
        "teacher-outputs-file",
        None,
        [_set("cache.teacher_outputs", "{tmp}/afile")],
        ("teacher_outputs",),
    ),
    ("output-dir-is-file", None, [_set("output_dir", "{tmp}/afile")], ("output_dir", "afile")),
    (
        "output-dir-under-file",
        None,
        [_set("output_dir", "{tmp}/afile/run")],
        ("output_dir", "afile"),
    ),
    ("output-dir-proc", None, [_set("output_dir", "/proc/x")], ("output_dir", "/proc")),
    ("output-dir-empty", None, [_set("output_dir", "")], ("output_dir", "empty")),
    (
        "output-dir-blank",
        _replace("output_dir: {tmp}/run", 'output_dir: "  "'),
        [],
        ("output_dir",),
    ),
    ("output-dir-null", _replace("output_dir: {tmp}/run", "output_dir: null"), [], ("output_dir",)),
    ("output-dir-list", _replace("output_dir: {tmp}/run", "output_dir: [a]"), [], ("output_dir",)),
    # -- output_dir placeholders: typos, positional fields, broken braces, attribute access
    ("placeholder-taks", None, [_set("output_dir", "{tmp}/{taks}")], ("output_dir", "{task}")),
    ("placeholder-0", None, [_set("output_dir", "{tmp}/{0}")], ("output_dir", "{0}")),
    ("placeholder-empty", None, [_set("output_dir", "{tmp}/{}")], ("output_dir",)),
    ("placeholder-open", None, [_set("output_dir", "{tmp}/{task")], ("output_dir",)),
    ("placeholder-close", None, [_set("output_dir", "{tmp}/task}")], ("output_dir",)),
    ("placeholder-conversion", None, [_set("output_dir", "{tmp}/{task!z}")], ("output_dir",)),
    ("placeholder-spec", None, [_set("output_dir", "{tmp}/{seed:q}")], ("output_dir", "{seed}")),
    ("placeholder-spec-str", None, [_set("output_dir", "{tmp}/{task:05d}")], ("output_dir",)),
    ("placeholder-attribute", None, [_set("output_dir", "{tmp}/{task.upper}")], ("output_dir",)),
    ("placeholder-index", None, [_set("output_dir", "{tmp}/{task[0]}")], ("output_dir",)),
    ("placeholder-dunder", None, [_set("output_dir", "{tmp}/{seed.__class__}")], ("output_dir",)),
    # -- duplicate keys: the last one used to win silently
    (
        "duplicate-top",
        _replace("seed: 0", "seed: 0\nseed: 5"),
        [],
        ("duplicate key 'seed'", "line 1"),
    ),
    (
        "duplicate-nested",
        _replace("max_length: 64", "max_length: 64, max_length: 32"),
        [],
        ("duplicate key 'max_length'",),
    ),
    ("duplicate-section", _append("training: {epochs: 2}\n"), [], ("duplicate key 'training'",)),
    (
        "duplicate-option",
        _replace("temperature: 4", "temperature: 4, temperature: 8"),
        [],
        ("duplicate",),
    ),
    # -- absurd values
    (
        "max-length-1e7",
        None,
        [_set("training.max_length", "10000000")],
        ("training.max_length", "8192"),
    ),
    (
        "max-length-float",
        _replace("max_length: 64", "max_length: 1.0e7"),
        [],
        ("training.max_length",),
    ),
    ("max-length-8193", None, [_set("training.max_length", "8193")], ("training.max_length",)),
    (
        "max-length-string",
        _replace("max_length: 64", "max_length: 1e7"),
        [],
        ("training.max_length",),
    ),
    (
        "teacher-max-length",
        None,
        [_set("teacher.training.max_length", "100000")],
        ("teacher.training.max_length",),
    ),
    ("epochs-1e9", None, [_set("training.epochs", "1000000000")], ("training.epochs", "10000")),
    ("epochs-1e9-text", _replace("epochs: 1", "epochs: 1e9"), [], ("training.epochs",)),
    (
        "teacher-epochs-1e9",
        None,
        [_set("teacher.training.epochs", "1000000000")],
        ("teacher.training.epochs",),
    ),
    (
        "pretrain-epochs-1e9",
        None,
        [_set("teacher.pretrain_epochs", "1000000000")],
        ("pretrain_epochs",),
    ),
    (
        "num-threads-10000",
        None,
        [_set("training.num_threads", "10000")],
        ("training.num_threads", "1024"),
    ),
    (
        "pretrain-dirs-missing",
        None,
        [_set("teacher.pretrain_dirs", "[{tmp}/nope]")],
        ("pretrain_dirs", "nope"),
    ),
    (
        "pretrain-dirs-file",
        None,
        [_set("teacher.pretrain_dirs", "[{tmp}/afile]")],
        ("pretrain_dirs", "afile"),
    ),
    # -- a teacher's position table bounds max_length (read from its config.json)
    (
        "hf-positions-roberta",
        _replace(
            "{name: code-teacher, vocab_size: 300, hidden_size: 16, num_layers: 1, num_heads: 2}",
            "{name: hf, path: {tmp}/roberta}",
        ),
        [_set("training.max_length", "256")],
        ("training.max_length", "128 tokens", "hf"),
    ),
    (
        "hf-positions-bert",
        _replace(
            "{name: code-teacher, vocab_size: 300, hidden_size: 16, num_layers: 1, num_heads: 2}",
            "{name: hf, path: {tmp}/bert}",
        ),
        [_set("training.max_length", "1024")],
        ("training.max_length", "512 tokens"),
    ),
    # -- bounded parsing: aliases, size, problem counts, long values
    (
        "alias-bomb",
        _whole(
            "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
        ),
        [],
        ("run.yaml", "200,000 values, each *alias counted"),
    ),
    ("alias-recursive", _append("x: &r [1, *r]\n"), [], ("run.yaml", "alias")),
    (
        "alias-1001",
        _append("x: &v 1\ny: [" + ", ".join(["*v"] * 1001) + "]\n"),
        [],
        ("run.yaml", "1000 *alias"),
    ),
    ("file-300KB", _append("# " + "x" * 300_000 + "\n"), [], ("run.yaml", "250,000")),
    (
        "unknown-2000-keys",
        _append("".join(f"zz{i}: 1\n" for i in range(2000))),
        [],
        ("and 1,980 more",),
    ),
    (
        "long-value-200KB",
        _replace("device: cpu", "precision: " + "x" * 200_000),
        [],
        ("training.precision", "characters"),
    ),
    ("long-key-100KB", _append("k" * 100_000 + ": 1\n"), [], ("run.yaml",)),
    ("long-key-1000", _append("k" * 1000 + ": 1\n"), [], ("run.yaml", "characters")),
    ("int-key", _append("1: x\n"), [], ("run.yaml",)),
    ("list-key", _append("? [a, b]\n: 1\n"), [], ("run.yaml",)),
    # -- not a run file at all
    ("not-utf8", None, [], ("run.yaml", "UTF-8")),
    ("binary", _whole("seed: 0\x00\x01\x02\n"), [], ("run.yaml",)),
    ("a-list", _whole("- seed: 0\n"), [], ("run.yaml", "mapping")),
    ("a-scalar", _whole("hello\n"), [], ("run.yaml", "mapping")),
    ("empty", _whole(""), [], ("task", "required")),
    ("tab-indent", _append("extra:\n\tx: 1\n"), [], ("run.yaml", "YAML")),
    ("unclosed-quote", _append('extra: "abc\n'), [], ("run.yaml", "YAML")),
    ("unclosed-flow", _replace("reporters: [jsonl]", "reporters: [jsonl"), [], ("run.yaml",)),
    (
        "python-tag",
        _append('x: !!python/object/apply:os.system ["echo hacked"]\n'),
        [],
        ("run.yaml",),
    ),
    ("python-name-tag", _append("x: !!python/name:os.system\n"), [], ("run.yaml",)),
    # -- components and sections
    ("task-unknown", None, [_set("task.name", "defekt")], ("task.name", "defect")),
    ("teacher-unknown", None, [_set("teacher.name", "nope")], ("teacher.name",)),
    ("student-unknown", None, [_set("student.name", "grue")], ("student.name", "gru")),
    ("method-unknown", None, [_set("method.name", "kdd")], ("method.name", "kd")),
    ("task-int", _replace("task: {name: defect, data_dir: ", "task: 5\nx: {y: "), [], ("task",)),
    (
        "method-list",
        _replace("method: {name: kd, temperature: 4}", "method: [kd]"),
        [],
        ("method",),
    ),
    (
        "method-no-name",
        _replace("method: {name: kd, temperature: 4}", "method: {temperature: 4}"),
        [],
        ("method",),
    ),
    (
        "method-typo-option",
        _replace("temperature: 4", "temprature: 4"),
        [],
        ("method.temprature", "temperature"),
    ),
    ("student-bad-hidden", None, [_set("student.hidden_size", "-1")], ("student.hidden_size",)),
    (
        "reporter-unknown",
        _replace("reporters: [jsonl]", "reporters: [jsnol]"),
        [],
        ("reporters.0",),
    ),
    ("reporters-int", _replace("reporters: [jsonl]", "reporters: 5"), [], ("reporters",)),
    (
        "training-list",
        _replace(
            "training: {epochs: 1, batch_size: 4, max_length: 64, device: cpu}", "training: [1]"
        ),
        [],
        ("training",),
    ),
    ("kernels-bad", _append("kernels: {impl: cuda}\n"), [], ("kernels.impl",)),
    ("top-typo", _append("sed: 1\n"), [], ("sed", "seed")),
    # -- --set itself
    ("set-no-equals", None, ["seed"], ("--set", "key.path=value")),
    ("set-into-scalar", None, [_set("seed.x", "1")], ("seed.x",)),
    ("set-index-out-of-range", None, [_set("reporters.5", "console")], ("reporters.5",)),
    ("set-bad-type", None, [_set("training.lr", "fast")], ("training.lr",)),
]


def _prepare(tmp: Path) -> Path:
    """The files cases point at: a plain file, fake model folders, the base run file."""
    (tmp / "afile").write_text("a user's file\n")
    for name, model_type, positions in (("roberta", "roberta", 130), ("bert", "bert", 512)):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(
            f'{{"model_type": "{model_type}", "max_position_embeddings": {positions}, '
            '"pad_token_id": 1}'
        )
    path = tmp / "run.yaml"
    path.write_text(base_config(tmp))
    return path


def _argv(command: str, path: Path, overrides: list[str], tmp: Path) -> list[str]:
    argv = command.split() + [str(path)]
    for item in overrides:
        argv += ["--set", item.replace("{tmp}", str(tmp))]
    return argv


@pytest.mark.parametrize("command", ["config validate", "run"])
@pytest.mark.parametrize(
    ("edit", "overrides", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_is_refused(command, edit, overrides, names, tmp_path, request):
    path = _prepare(tmp_path)
    if "not-utf8" in request.node.callspec.id:
        path.write_bytes(path.read_bytes().replace(b"seed: 0", b"seed: 0 # caf\xe9"))
    elif edit is not None:
        path.write_text(edit(path.read_text(), tmp_path))
    if "/proc" in str(overrides) and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    before = {p: digest(p) for p in (path, tmp_path / "afile")}
    result = kdkit(*_argv(command, path, overrides, tmp_path))
    assert_user_error(result, *names)
    assert {p: digest(p) for p in before} == before  # nothing the user gave is changed
    assert not (tmp_path / "run").exists()  # refused before any work: no run folder
    assert not (tmp_path / "cache").exists()


def test_the_base_file_is_valid(tmp_path):
    """The corpus' cases fail because of their fault, not because the base is broken."""
    path = _prepare(tmp_path)
    result = kdkit("config", "validate", str(path))
    assert result.code == 0, result.text
    # and validation only looked: no run folder, no cache, no probe folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bert", "roberta", "run.yaml"]


def test_a_teacher_position_table_allows_what_fits(tmp_path):
    path = _prepare(tmp_path)
    text = path.read_text().replace(
        "{name: code-teacher, vocab_size: 300, hidden_size: 16, num_layers: 1, num_heads: 2}",
        f"{{name: hf, path: {tmp_path}/roberta}}",
    )
    path.write_text(text)
    assert kdkit("config", "validate", str(path), "--set", "training.max_length=128").code == 0
    assert kdkit("config", "validate", str(path), "--set", "training.max_length=129").code == 2


# ---------------------------------------------------------------------- every training number

#: Numeric training settings and values each refuses (every one has a lower bound; the capped
#: ones also refuse 10**30).
NUMERIC = {
    "epochs": True,
    "max_steps": False,
    "batch_size": False,
    "eval_batch_size": False,
    "lr": False,
    "weight_decay": False,
    "adam_eps": False,
    "warmup_ratio": True,
    "max_grad_norm": False,
    "max_length": True,
    "eval_every": False,
    "early_stopping_patience": False,
    "num_threads": True,
    "log_every": False,
    "save_every": False,
}
BAD_VALUES = ["-1", "abc", "[1]", "{a: 1}"]
NUMERIC_CASES = [
    (name, value)
    for name, capped in NUMERIC.items()
    for value in BAD_VALUES + (["1000000000000000000000000000000"] if capped else [])
]


@pytest.mark.parametrize(
    ("name", "value"), NUMERIC_CASES, ids=[f"{n}={v}" for n, v in NUMERIC_CASES]
)
def test_bad_training_number_is_refused(name, value, tmp_path):
    path = _prepare(tmp_path)
    result = kdkit("config", "validate", str(path), "--set", f"training.{name}={value}")
    assert_user_error(result, f"training.{name}")


# ---------------------------------------------------------------------- mutations (hypothesis)

_MUTATION_CHARS = list(":[]{}&*!|>-#'\"\t\n ,?%@`") + ["\x00", "é", "{taks}", "<<: *a"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True),
            st.sampled_from(["insert", "delete", "duplicate-line"]),
            st.sampled_from(_MUTATION_CHARS),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_config_never_tracebacks(edits, tmp_path_factory):
    """Any mutation of a valid file is either still valid (exit 0) or a user error (exit 2)."""
    tmp = tmp_path_factory.mktemp("mut")
    path = _prepare(tmp)
    text = path.read_text()
    for where, kind, char in edits:
        i = int(where * len(text))
        if kind == "insert":
            text = text[:i] + char + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            k = int(where * len(lines))
            text = "".join(lines[: k + 1] + lines[k:])
    path.write_text(text)
    result = kdkit("config", "validate", str(path))
    assert result.code in (0, 2), result.text[-2000:]
    assert "Traceback" not in result.text
    if result.code == 2:
        assert "kdkit: error:" in result.err and len(result.text) < 20_000


# ---------------------------------------------------------------------- limits, fast


def test_a_50mb_config_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:  # sparse: 50 MB on paper, nothing to write
        handle.truncate(50_000_000)
    start = time.process_time()
    result = kdkit("config", "validate", str(path))
    assert time.process_time() - start < 1.0
    assert_user_error(result, "big.yaml", "50,000,000 bytes")


def test_an_alias_bomb_is_refused_fast_and_small(tmp_path):
    bomb = (
        "a0: &a0 ["
        + ", ".join(["lol"] * 9)
        + "]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 12))
    )
    assert len(bomb) < 1100  # 9**12 values once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    start = time.process_time()
    result = kdkit("config", "validate", str(path))
    assert time.process_time() - start < 1.0
    assert_user_error(result, "bomb.yaml", "each *alias counted where it is used")


def test_safe_yaml_keeps_what_plain_yaml_reads():
    """Within the limits, safe_yaml.load is yaml.safe_load (anchors and merges included)."""
    import yaml

    text = "base: &b {lr: 0.1, epochs: 2}\nrun:\n  <<: *b\n  epochs: 3\nlist: [*b, *b]\n"
    assert safe_yaml.load(text) == yaml.safe_load(text)
    assert safe_yaml.load(text)["run"] == {"lr": 0.1, "epochs": 3}
    assert safe_yaml.load("") is None


def test_problem_lists_are_summarised_and_values_cut(tmp_path):
    path = _prepare(tmp_path)
    path.write_text(path.read_text() + "".join(f"zz{i}: {'v' * 2000}\n" for i in range(50)))
    result = kdkit("config", "validate", str(path))
    assert_user_error(result, "50 problems", "... and 30 more")
    assert result.err.count("unknown option") == 20


# ---------------------------------------------------------------------- real stderr


@pytest.mark.parametrize(
    "body", ["seed: " + "[" * 5000, "seed: 0\nseed: 1\n"], ids=["nested", "duplicate"]
)
def test_no_traceback_on_real_stderr(body, tmp_path):
    """A real ``kdkit`` process (not the in-process main) prints the message, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "KDKIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [python(), "-m", "kdkit", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    result = Result(done.returncode, done.stdout, done.stderr)
    assert_user_error(result, "bad.yaml")
