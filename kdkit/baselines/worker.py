"""Worker process of the lexical grid: ``python -m kdkit.baselines.worker``.

:func:`kdkit.baselines.lexical.fit_tfidf_lr` with ``workers > 1`` starts this module once per
worker, writes one JSON job to its stdin (train and validation columns, the chains to fit, the
grid's ``C`` values, ``max_features``, ``num_classes``, ``seed``) and reads back one ``.npy``
array on stdout: the validation log-probabilities ``[chains, len(C), N_val, num_classes]``
(float64). JSON in, ``.npy`` out (read with ``allow_pickle=False``): nothing is unpickled, and
unlike ``multiprocessing``'s spawn the caller's ``__main__`` is never re-imported, so a script
without an ``if __name__ == "__main__"`` guard works.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import numpy as np


def run_job(job: dict[str, Any]) -> np.ndarray:
    """Fit each chain of ``job`` and stack its validation logits."""
    from kdkit.baselines.lexical import _chain_val_logits

    out = []
    for pair_mode, word, char, weight in job["chains"]:
        chain = (pair_mode, tuple(word), tuple(char) if char is not None else None, weight)
        logits = _chain_val_logits(
            job["train"],
            job["val"],
            chain,
            job["cs"],
            job["max_features"],
            job["num_classes"],
            job["seed"],
        )
        out.append(np.stack(logits))
    return np.stack(out)


def main() -> None:
    job = json.load(sys.stdin)
    buf = io.BytesIO()
    np.save(buf, run_job(job), allow_pickle=False)
    sys.stdout.buffer.write(buf.getvalue())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
