"""What ``kdkit bench --static`` compiles: one kernel at one configuration.

Defined here, beside the kernels, because each op's ``traffic.py`` builds these specs;
:mod:`kdkit.bench.static` compiles them (keeping it here avoids a bench <-> kernels import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StaticSpec:
    """One kernel at one configuration.

    ``args`` lists the kernel's parameters in order as ``(name, type)`` where ``type`` is a Triton
    signature type (``"*bf16"``, ``"*fp32"``, ``"*i64"``, ``"i32"``, ``"i64"``, ``"fp32"``) or
    ``"constexpr"``; ``constexprs`` gives the constexpr values; ``aligned`` names the pointer and
    integer arguments specialised as multiples of 16 (as Triton's launcher does for 16-byte
    aligned pointers and integers divisible by 16).
    """

    op: str
    kernel: Any  # a triton JITFunction
    args: list[tuple[str, str]]
    constexprs: dict[str, Any]
    aligned: set[str] = field(default_factory=set)
    num_warps: int = 4
    num_stages: int = 3
    label: str = ""  # shape / dtype / config, for the table
    params: dict[str, Any] = field(default_factory=dict)  # the op's shape, for its traffic model
    dtype: str = "bf16"
