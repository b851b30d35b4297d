"""Baselines of the default run's task (exception, labels top-10, window 5 — `kdkit config show`),
loaded through the plugin registry, with the default grid and with words only; prints timings.

KDKIT_CACHE=/tmp/signal-cache python benchmarks/signal/baselines_default.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from load_default import load

from kdkit.baselines import BaselineOptions, compute_baselines

task = load("exception", labels="top-10", window=5)
task.load()
for name, o in [
    ("words-only", BaselineOptions(char_ngrams=(None,))),
    ("default", BaselineOptions()),
]:
    t = time.time()
    b = compute_baselines(task, use_cache=False, options=o)
    print(
        name,
        f"{time.time() - t:.1f}s",
        b.tuned,
        {s: b.splits[s].scores for s in b.splits},
        b.splits["test"].ci,
        flush=True,
    )
