"""Seeds everywhere, and the random state a checkpoint must carry for an exact resume."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); prefer deterministic kernels where cheap."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: a few CUDA ops have no deterministic version; they must not stop a run
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """The global random state (torch CPU/CUDA, NumPy, Python) as tensors and JSON values."""
    # legacy=True (the default) gives the MT19937 tuple (name, keys, pos, has_gauss, gauss)
    np_state = cast("tuple[Any, ...]", np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import ast

    torch.random.set_rng_state(state["torch"])
    random.setstate(_to_tuple(ast.literal_eval(state["python"])))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value
