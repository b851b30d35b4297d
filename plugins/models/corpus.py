"""The code texts built-in models learn from (shared by the model plugins; not an entry point).

* :func:`training_texts` — every code text of the training split: what a student's or the code
  teacher's BPE vocabulary is trained on;
* :func:`code_corpus` — the code teacher's masked-LM pre-training texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def training_texts(splits: Any) -> list[str]:
    """Every code text of the training split (both halves of pairs) for tokenizer training."""
    train = splits["train"]
    texts = list(train["text"])
    if "text_pair" in train.column_names:
        texts += list(train["text_pair"])
    return texts


def code_corpus(
    texts: Sequence[str], extra_dirs: Sequence[str] = (), limit: int = 50_000
) -> list[str]:
    """The pre-training texts: ``texts`` plus the ``.py`` files under ``extra_dirs``."""
    corpus = list(texts)
    for d in extra_dirs:
        for path in sorted(Path(d).expanduser().rglob("*.py")):
            if len(corpus) >= limit:
                break
            try:
                corpus.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    return corpus[:limit]
