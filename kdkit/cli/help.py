"""The examples every built-in command's ``--help`` ends with.

:data:`EXAMPLES` maps a command path (``"config validate"``) to ``(what, command line)`` pairs;
:func:`add_examples` puts them in each parser's epilog (printed as written, under
``examples:``) once :func:`kdkit.cli.build_parser` has added every command. A built-in command
without an entry here fails ``tests/api/test_cli_help.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import cast

#: Command path -> ``(what it does, the command line)``; the command lines are real (flags and
#: files that exist in a checkout).
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "run": [
        ("the offline default job: teacher, FT and KD students, comparison", "kdkit run"),
        (
            "the default job comparing FT with DIST instead of KD",
            "kdkit run --set method.name=dist",
        ),
        (
            "one run from a run file, two epochs",
            "kdkit run configs/exception-kd-gru.yaml --set training.epochs=2",
        ),
        (
            "the summary as JSON for a script (everything else on stderr)",
            "kdkit run configs/exception-kd-gru.yaml --json > summary.json",
        ),
        ("continue an interrupted run", "kdkit run --resume runs/exception-kd-gru-seed0"),
    ],
    "pretrain": [
        (
            "pre-train the default run's code-teacher encoder for 1,500 steps (cached; run it "
            "again to resume) and copy it out as an HF folder",
            "kdkit pretrain --set teacher.pretrain.steps=1500 --output encoder",
        ),
        (
            "the same encoder, only into the cache (a run with this teacher then reuses it)",
            "kdkit pretrain --set teacher.pretrain.steps=1500 --quiet",
        ),
    ],
    "teach": [
        (
            "fine-tune the run file's teacher (MiniLM) on its task into a folder; a run then uses "
            "it as teacher: {name: hf, path: teachers/exc-minilm}",
            "kdkit teach configs/exception-minilm.yaml --output teachers/exc-minilm --epochs 3",
        ),
        ("the default run's code teacher, quietly", "kdkit teach --output teachers/exc --quiet"),
    ],
    "predict": [
        ("classify a file with a run's best student", "kdkit predict runs/my-run --file code.py"),
        (
            "rows of a JSONL file, the 3 most likely labels each",
            "kdkit predict runs/my-run/best/model --jsonl rows.jsonl --top-k 3",
        ),
        ("code on standard input", "cat code.py | kdkit predict runs/my-run"),
    ],
    "data": [
        (
            "build the exception dataset from the standard library",
            "kdkit data build exception --out data/exc",
        ),
        ("what a built dataset holds", "kdkit data info data/exc"),
    ],
    "data build": [
        (
            "the exception dataset from the standard library",
            "kdkit data build exception --out data/exc",
        ),
        (
            "a small, fast build from two files, CuBERT's 20 labels",
            "kdkit data build exception --out /tmp/exc --files a.py b.py --labels cubert --min-examples 10",
        ),
        ("a task's own flags", "kdkit data build clone --help"),
    ],
    "data info": [("counts per split and label of a built dataset", "kdkit data info data/exc")],
    "plugins": [
        ("every installed component, and plugins that failed to load", "kdkit plugins"),
        ("only the KD methods, as JSON", "kdkit plugins --kind kd_method --json"),
    ],
    "config": [
        ("check a run file (every problem, with its line)", "kdkit config validate my-run.yaml"),
        ("the default run, every default filled in", "kdkit config show"),
    ],
    "config validate": [
        ("check a run file", "kdkit config validate configs/exception-kd-gru.yaml"),
        ("check it with an override", "kdkit config validate my-run.yaml --set method.name=dist"),
    ],
    "config show": [
        ("the embedded default run, fully resolved", "kdkit config show"),
        (
            "a run file with an override, resolved",
            "kdkit config show configs/exception-kd-gru.yaml --set training.epochs=2",
        ),
    ],
    "config schema": [
        ("the JSON schema of run files (for editors)", "kdkit config schema > run.schema.json")
    ],
    "cache": [
        ("what the cache holds and its size", "kdkit cache ls"),
        ("drop the cached teacher outputs", "kdkit cache clear teacher-outputs"),
    ],
    "cache ls": [("the cache's parts and sizes, as JSON", "kdkit cache ls --json")],
    "cache verify": [
        ("check every cache entry against its integrity manifest", "kdkit cache verify"),
        ("check one entry (a key from `kdkit cache ls`)", "kdkit cache verify 3fa2c1d0e9b8"),
    ],
    "cache clear": [
        (
            "drop cached teacher outputs and tokenizers",
            "kdkit cache clear teacher-outputs tokenizers",
        ),
        ("delete the whole cache", "kdkit cache clear --all"),
    ],
    "cache import": [
        (
            "import teacher outputs made elsewhere for a run file's task (train from them with "
            "--set cache.teacher_import=my-teacher)",
            "kdkit cache import teacher-train.safetensors --config run.yaml --name my-teacher",
        ),
        (
            "the same for a task with its default options",
            "kdkit cache import teacher-train.safetensors --task exception",
        ),
    ],
    "export": [
        (
            "a run's best student as an ONNX model, checked against PyTorch and timed",
            "kdkit export runs/default/contrastive --format onnx --out exported/student-onnx",
        ),
        (
            "a saved Transformer student as a Hugging Face folder with real label names",
            "kdkit export runs/default/contrastive --format hf --out exported/student-hf",
        ),
    ],
    "profile": [
        ("where the default job's KD step spends its time, by region", "kdkit profile --steps 20"),
        (
            "the reference and the Triton losses side by side (on a GPU)",
            "kdkit profile my_run.yaml --compare-impl reference,triton --out profiles/cmp",
        ),
    ],
    "bench": [
        ("a quick CPU smoke run of every fused loss", "kdkit bench --quick"),
        (
            "the KD loss on the GPU, bf16, forward and backward",
            "kdkit bench --device cuda --ops kd_loss --dtypes bf16 --modes fwd+bwd",
        ),
        ("the ops and providers", "kdkit bench --list"),
    ],
    "study": [
        (
            "what a grid would run, and its estimated cost",
            "kdkit study configs/study/offline.yaml --dry-run",
        ),
        (
            "run it (complete runs are skipped, interrupted ones resume)",
            "kdkit study configs/study/offline.yaml",
        ),
        (
            "two shards at once on this machine",
            "kdkit study configs/study/offline.yaml --workers 2",
        ),
    ],
    "report": [
        ("the Markdown and HTML report of a study", "kdkit report runs/study/offline"),
        ("one report over two studies", "kdkit report runs/study/a runs/study/b --out reports/ab"),
    ],
}


class _ExamplesMixin(argparse.HelpFormatter):
    """Prints an epilog that starts with ``examples:`` as written (argparse would re-wrap it)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def epilog(examples: list[tuple[str, str]]) -> str:
    """The ``examples:`` section: each command line under a ``# what`` comment."""
    lines = ["examples:"]
    for what, command in examples:
        lines += [f"  # {what}", f"  {command}"]
    return "\n".join(lines)


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command parser under ``parser``, as ``("config validate", parser)``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield " ".join((*path, name)), sub
                yield from commands(sub, (*path, name))


def examples_formatter(base: type[argparse.HelpFormatter]) -> type[argparse.HelpFormatter]:
    """``base`` that prints an ``examples:`` epilog as written."""
    if issubclass(base, _ExamplesMixin):
        return base
    return type(f"Examples{base.__name__}", (_ExamplesMixin, base), {})


def task_examples(task: str) -> list[tuple[str, str]]:
    """The examples of ``kdkit data build TASK --help`` (a parser made per task)."""
    return [
        (
            f"build the {task} dataset from the standard library",
            f"kdkit data build {task} --out data/{task}",
        ),
        (
            "from the installed packages too, its counts as JSON",
            f"kdkit data build {task} --out data/{task} --from stdlib site-packages --json",
        ),
    ]


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Give every command in :data:`EXAMPLES` its examples epilog (keeping its formatter)."""
    for name, sub in commands(parser):
        examples = EXAMPLES.get(name)
        if not examples:
            continue
        sub.epilog = epilog(examples)
        sub.formatter_class = examples_formatter(
            cast("type[argparse.HelpFormatter]", sub.formatter_class)
        )
