"""Choosing between the Triton kernels and the PyTorch references.

Precedence (first that is set wins):

1. the ``impl=`` argument of the op,
2. the environment variable ``KDKIT_KERNEL_IMPL``,
3. the run configuration (:func:`set_default_impl`, called by the engine with ``kernels.impl``),
4. ``"auto"``.

``"auto"`` runs Triton when the tensors are on a CUDA device, Triton imports and the op supports
the dtype/shape; otherwise it quietly runs the reference. An explicit ``"triton"`` that cannot run
raises :class:`KernelUnavailableError` saying why and what to do. Under ``TRITON_INTERPRET=1`` an
explicit ``"triton"`` also runs on CPU tensors (that is how the tests exercise the kernels);
``"auto"`` never picks the interpreter.

What ran is recorded per op: :func:`last_impls` returns ``{op: impl}`` for the run directory.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import torch

from kdkit.errors import KdkitError

#: The implementations a user may ask for.
IMPLS = ("auto", "reference", "triton")
ENV_VAR = "KDKIT_KERNEL_IMPL"
#: Storage dtypes the Triton kernels accept (maths are always fp32).
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_default_impl: str | None = None
_last: dict[str, str] = {}


class KernelUnavailableError(KdkitError):
    """An explicitly requested implementation cannot run on these inputs."""


def _check(impl: str, where: str) -> str:
    impl = impl.strip().lower()
    if impl not in IMPLS:
        raise KdkitError(
            f"unknown kernel implementation {impl!r}",
            where=where,
            fix=f"use one of: {', '.join(IMPLS)}",
        )
    return impl


def set_default_impl(impl: str | None) -> None:
    """Set the run-wide choice (``"auto"``, ``"reference"``, ``"triton"``; ``None`` clears it)."""
    global _default_impl
    _default_impl = None if impl is None else _check(impl, "kernels.impl")


def get_default_impl() -> str | None:
    """The run-wide choice set by :func:`set_default_impl`, or ``None``."""
    return _default_impl


def last_impls() -> dict[str, str]:
    """``{op name: implementation that ran last}`` (e.g. ``{"kd_loss": "reference"}``)."""
    return dict(_last)


def reset_last_impls() -> None:
    """Forget what ran (tests and benchmarks call this between cases)."""
    _last.clear()


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """``None`` when ``import triton`` works, else the reason it does not."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton cannot be imported ({type(exc).__name__}: {exc})"
    return None


def requested_impl(impl: str | None) -> str:
    """Resolve the precedence chain to one of :data:`IMPLS`."""
    if impl is not None:
        return _check(impl, "impl= argument")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check(env, f"environment variable {ENV_VAR}")
    if _default_impl is not None:
        return _default_impl
    return "auto"


def triton_blocker(tensors: Iterable[torch.Tensor], op_reason: str | None) -> str | None:
    """Why Triton cannot run on ``tensors`` (``None`` when it can)."""
    tensors = [t for t in tensors if t is not None]
    err = triton_import_error()
    if err:
        return err
    devices = {t.device.type for t in tensors}
    if len({t.device for t in tensors}) > 1:
        return f"the tensors are on different devices ({sorted(str(t.device) for t in tensors)})"
    if devices != {"cuda"} and not (devices == {"cpu"} and interpreting()):
        return f"the tensors are on {'/'.join(sorted(devices))}, not on a CUDA device"
    for t in tensors:
        if t.is_floating_point() and t.dtype not in TRITON_DTYPES:
            return f"dtype {t.dtype} is not supported (use float32, bfloat16 or float16)"
    return op_reason


def choose(
    op: str, impl: str | None, tensors: Iterable[torch.Tensor], op_reason: str | None = None
) -> str:
    """Decide which implementation of ``op`` runs, record it, and return ``"triton"`` or ``"reference"``.

    Args:
        op: the op's public name (``"kd_loss"``...).
        impl: the ``impl=`` argument.
        tensors: the op's input tensors.
        op_reason: why the op's Triton kernel does not support these inputs, or ``None``.
    """
    want = requested_impl(impl)
    if want == "reference":
        _last[op] = "reference"
        return "reference"
    tensors = [t for t in tensors if t is not None]
    if want == "auto" and any(t.device.type != "cuda" for t in tensors):
        _last[op] = "reference"  # auto never picks the CPU interpreter
        return "reference"
    blocker = triton_blocker(tensors, op_reason)
    if blocker is None:
        _last[op] = "triton"
        return "triton"
    if want == "triton":
        raise KernelUnavailableError(
            f"the Triton implementation of {op} cannot run: {blocker}",
            where=f"kdkit.kernels.{op}(impl='triton')",
            fix="move the tensors to a CUDA device with Triton installed (pip install 'kdkit[triton]'), "
            "set TRITON_INTERPRET=1 to run the kernels on CPU (slow; for tests), or use impl='auto' "
            f"/ {ENV_VAR}=auto to fall back to the PyTorch reference",
        )
    _last[op] = "reference"
    return "reference"
