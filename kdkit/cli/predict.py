"""``kdkit predict``: classify code with a saved student (or any model kdkit saved).

The model directory's ``kdkit.json`` names the component that saved it; that component's ``load``
callback (registered by its plugin) rebuilds the model, so a third-party student predicts like a
built-in one once its distribution is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kdkit.errors import KdkitError

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    from kdkit.api import Example


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify code with a trained student",
        description="Classify code with a saved model: a run directory (its best "
        "student) or a model directory. Input: --file (repeatable), --jsonl "
        "(rows with 'text' and, for pairs, 'text_pair'), or standard input. Output: "
        "one JSON line per input with the label and its probability.",
    )
    p.add_argument("model", metavar="RUN_DIR_OR_MODEL_DIR")
    p.add_argument("--file", action="append", default=[], help="a code file (repeatable)")
    p.add_argument("--jsonl", help="a JSONL file of rows {text, text_pair?}")
    p.add_argument("--top-k", type=int, default=1, help="also list the k most likely labels")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=predict)


def _inputs(args: argparse.Namespace) -> list[tuple[str, Example]]:
    items: list[tuple[str, Example]] = []
    for f in args.file:
        try:
            items.append((f, Path(f).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise KdkitError(
                f"cannot read {f}: {exc}", where=f, fix="pass a UTF-8 text file"
            ) from None
    if args.jsonl:
        for n, line in enumerate(Path(args.jsonl).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ex = (row["text"], row["text_pair"]) if "text_pair" in row else row["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise KdkitError(
                    "each line must be a JSON object with 'text'",
                    where=f"{args.jsonl}:{n}",
                    fix='write {"text": "..."} per line',
                ) from None
            items.append((f"{args.jsonl}:{n}", ex))
    if not items:
        if sys.stdin.isatty():
            raise KdkitError("nothing to classify", fix="pass --file, --jsonl, or pipe code in")
        text = sys.stdin.read()
        if not text.strip():  # `kdkit predict </dev/null`: classifying "" would be a made-up answer
            raise KdkitError(
                "standard input is empty: there is no code to classify",
                where="<stdin>",
                fix="pipe code in (kdkit predict RUN_DIR < file.py), or pass --file or --jsonl",
            )
        items.append(("<stdin>", text))
    return items


def predict(args: argparse.Namespace) -> int:
    """Classify the inputs with the saved model; one JSON line per input on stdout."""
    from kdkit.api import Needs
    from kdkit.discovery import load_plugins
    from kdkit.engine.persist import find_model_dir, load_student
    from kdkit.models import read_model_meta

    directory = find_model_dir(args.model)
    # the component named in kdkit.json reloads the model (its plugin's load callback), after
    # its files are checked against the manifest
    model = load_student(directory, load_plugins().registry).eval()
    meta = read_model_meta(directory)
    labels = meta.get("labels") or []
    if not isinstance(labels, list):
        raise KdkitError(
            "kdkit.json's labels are not a list of names",
            where=str(directory / "kdkit.json"),
            fix="the model directory is damaged: use another copy or save the model again",
        )
    items = _inputs(args)
    singles = [i for i, (_, ex) in enumerate(items) if isinstance(ex, str)]
    pairs = [i for i, (_, ex) in enumerate(items) if not isinstance(ex, str)]
    probs: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for group in (singles, pairs):
            for start in range(0, len(group), args.batch_size):
                rows = group[start : start + args.batch_size]
                enc = model.encode([items[i][1] for i in rows], args.max_length)
                p = torch.softmax(model(enc, Needs()).logits.float(), -1)
                probs.update(zip(rows, p))
    for i, (source, _) in enumerate(items):
        p = probs[i]
        name = lambda k: labels[k] if k < len(labels) else str(k)  # noqa: E731
        out = {
            "source": source,
            "label": name(int(p.argmax())),
            "probability": round(float(p.max()), 6),
        }
        if args.top_k > 1:
            top = torch.topk(p, min(args.top_k, p.numel()))
            out["top"] = [
                [name(int(k)), round(float(v), 6)] for v, k in zip(top.values, top.indices)
            ]
        print(json.dumps(out))
    return 0
