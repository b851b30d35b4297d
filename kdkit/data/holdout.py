"""The machine-wide held-out part of local Python code: what pre-training may never read.

kdkit builds its offline tasks *and* pre-trains its code teacher from the same local code (the
standard library and the installed packages). A teacher pre-trained on a function that is later
a validation or test example has seen that example's code (for exception classification: the
very ``except KeyError`` the task masks). So the split between "may be evaluated on" and "may be
pre-trained on" is fixed once, for every task, by a hash of each file's name:

* a file is **held out** when ``blake2b(SALT + key)`` falls below :data:`HELD_OUT_SHARE`; the key
  is the file's source label and path inside it (``stdlib:email/utils.py``,
  ``torch:torch/nn/functional.py``), with package versions left out, so the rule is the same on
  every machine and survives upgrades;
* offline builders put only held-out files into validation and test (files that are not held
  out go to train; held-out files fill validation and test first, then train);
* pre-training reads only files that are **not** held out.

Training files may be both pre-trained on and trained on: their labels are the task's training
signal anyway. :func:`describe` is recorded in built datasets and pre-trained models, and a
pre-trained teacher refuses a dataset whose evaluation splits were not built under the same rule.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

#: Changing the salt or the share changes which files are held out: every build and every
#: pre-trained model records both, and mismatches are refused.
SALT = "kdkit-holdout-v1"
#: Share of files held out (validation + test of a build take 2 x eval_share <= 0.3 of its rows
#: by default, so there are held-out files to spare).
HELD_OUT_SHARE = 0.4

#: ``NAME==VERSION:`` in a distribution's source label (see :mod:`kdkit.data.sources`).
_VERSION = re.compile(r"==[^:]*")


def holdout_key(group: str) -> str:
    """The machine-independent key of a split group: versions left out
    (``torch==2.13.0:torch:nn/f.py`` -> ``torch:torch:nn/f.py``) and a directory source's
    absolute path replaced by ``dir`` (``/home/me/src:pkg/a.py`` -> ``dir:pkg/a.py``)."""
    if group.startswith("/"):
        return "dir:" + group.split(":", 1)[-1]
    return _VERSION.sub("", group, count=1)


def is_held_out(group: str) -> bool:
    """Whether the file (or package) ``group`` belongs to the held-out part: evaluation data may
    come from it, pre-training may not read it."""
    digest = hashlib.blake2b((SALT + holdout_key(group)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < HELD_OUT_SHARE


def describe(level: str = "file") -> dict[str, Any]:
    """The rule, as builds and pre-trained models record it (``level``: the split unit it was
    applied to; pre-training excludes held-out *files*, so only file-level builds are safe)."""
    return {"salt": SALT, "share": HELD_OUT_SHARE, "level": level}
