"""Load the default run's task through the registry with the default options (builds once)."""

import time

from kdkit.api import BuildContext
from kdkit.discovery import load_plugins


def load(name="exception", **opts):
    plugins = load_plugins(distributions={"kdkit"})
    comp = plugins.registry.get("task", name)
    task = comp.build(comp.options(opts), BuildContext())
    return task


if __name__ == "__main__":
    t = time.time()
    task = load("exception", labels="top-10", window=5)
    dd = task.load()
    print({s: len(dd[s]) for s in dd}, task.labels, task.fingerprint(), f"{time.time() - t:.1f}s")
