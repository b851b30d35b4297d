"""``kdkit bench --static``: compile every Triton kernel for sm_90 on a machine without a GPU.

Each op folder of :mod:`kdkit.kernels` that has a ``traffic.py`` module is found automatically;
that module holds the op's traffic model beside its kernels and says what to compile:

* ``static_specs(level) -> list[StaticSpec]`` (``level`` is ``"priority"`` for every priority
  configuration, ``"test"`` for the few the test compiles);
* ``traffic(params, dtype) -> dict`` with at least ``units`` (the model's HBM traffic in passes
  over the op's main tensor in the storage dtype, or the op's stated unit), ``budget`` (the
  documented limit of ``units``), ``bytes_per_element`` and ``flops_per_element``.

Each kernel is compiled with Triton's bundled compiler (``triton.compile`` on an ``ASTSource``
with ``GPUTarget("cuda", 90, 32)``: needs no driver), its PTX is assembled once more with the
bundled ``ptxas -v`` to read registers and spill bytes, and the PTX's global loads/stores give
the vector widths. Nothing here runs a kernel.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any

from kdkit.kernels.static_spec import StaticSpec

#: The GPU the check compiles for: (backend, compute capability, warp size).
TARGET = ("cuda", 90, 32)

_TORCH_TO_TRITON = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


# StaticSpec lives with the kernels (their traffic modules build it); re-exported here.
def op_modules() -> dict[str, Any]:
    """``{op folder: its traffic module}`` for every folder of kdkit.kernels with ``traffic.py``."""
    import kdkit.kernels as kernels_pkg

    found = {}
    for info in pkgutil.iter_modules(kernels_pkg.__path__):
        if not info.ispkg:
            continue
        name = f"kdkit.kernels.{info.name}.traffic"
        if importlib.util.find_spec(name) is not None:
            found[info.name] = importlib.import_module(name)
    return found


def _ptxas() -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(TARGET[1]).path


_VEC = re.compile(r"\b(ld|st)\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.([bfsu])(\d+)\b")
_ASYNC = re.compile(
    r"\bcp\.async(?:\.\w+)*\.shared(?:::\w+)?\.global(?:\.\w+)*\s+\[[^\]]+\],\s*\[[^\]]+\],\s*(0x[0-9a-fA-F]+|\d+)"
)


def access_widths(ptx: str) -> dict[str, dict[int, int]]:
    """``{"load": {bytes per access: count}, "store": {...}}`` of the PTX's global accesses."""
    out: dict[str, Counter] = {"load": Counter(), "store": Counter()}
    for kind, vec, _, bits in _VEC.findall(ptx):
        width = int(vec or 1) * int(bits) // 8
        out["load" if kind == "ld" else "store"][width] += 1
    for size in _ASYNC.findall(ptx):  # global -> shared async copies (pipelined tile loads)
        out["load"][int(size, 0)] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def ptxas_usage(ptx: str, arch: str) -> dict[str, int]:
    """Registers and spill bytes from ``ptxas -v`` (the bundled ptxas; no GPU needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as fh:
            fh.write(ptx)
        proc = subprocess.run(
            [_ptxas(), "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        )
    log = proc.stderr + proc.stdout

    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "registers": grab(r"Used (\d+) registers"),
        "spill_store_bytes": grab(r"(\d+) bytes spill stores"),
        "spill_load_bytes": grab(r"(\d+) bytes spill loads"),
        "stack_bytes": grab(r"(\d+) bytes stack frame"),
    }


def compile_spec(spec: StaticSpec) -> dict[str, Any]:
    """Compile one spec for sm_90 and measure it (registers, spills, shared memory, widths)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence Triton 3.9's warning
    signature = {name: typ for name, typ in spec.args}
    index = {name: i for i, (name, _) in enumerate(spec.args)}
    constexprs = {(index[k],): v for k, v in spec.constexprs.items()}
    attrs = {(index[k],): [["tt.divisibility", 16]] for k in spec.aligned}
    t0 = time.perf_counter()
    src = ASTSource(fn=spec.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(
        src,
        target=GPUTarget(*TARGET),
        options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
    )
    seconds = time.perf_counter() - t0
    ptx = compiled.asm["ptx"]
    arch = re.search(r"\.target\s+(sm_\w+)", ptx)
    usage = ptxas_usage(ptx, arch.group(1) if arch else "sm_90a")
    widths = access_widths(ptx)
    return {
        "op": spec.op,
        "kernel": spec.kernel.__name__,
        "config": spec.label,
        "dtype": spec.dtype,
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        **usage,
        "shared_bytes": int(compiled.metadata.shared),
        "load_widths": widths["load"],
        "store_widths": widths["store"],
        "max_load_bytes": max(widths["load"], default=0),
        "max_store_bytes": max(widths["store"], default=0),
        "compile_s": round(seconds, 2),
    }


def run_static(level: str = "priority", ops: list[str] | None = None, log=None) -> list[dict]:
    """Compile every spec of every op (or of ``ops``, folder names) and attach its traffic model.

    Returns one row per kernel configuration. A row whose compile fails has ``status: error``.
    """
    rows = []
    for name, module in sorted(op_modules().items()):
        if ops and name not in ops:
            continue
        for spec in module.static_specs(level):
            if log:
                log(f"static: {spec.op}.{spec.kernel.__name__} [{spec.label}]")
            try:
                row = {"status": "ok", **compile_spec(spec)}
            except Exception as exc:  # report it, carry on with the other kernels
                row = {
                    "status": "error",
                    "op": spec.op,
                    "kernel": spec.kernel.__name__,
                    "config": spec.label,
                    "reason": f"{type(exc).__name__}: {exc}"[:400],
                }
            model = module.traffic(spec.params, spec.dtype)
            row["traffic"] = model
            row["units"] = model["units"]
            row["budget"] = model["budget"]
            row["bytes_per_element"] = model["bytes_per_element"]
            row["within_budget"] = model["units"] <= model["budget"] + 1e-9
            rows.append(row)
    return rows


STATIC_COLUMNS = [
    ("op", "op"),
    ("kernel", "kernel"),
    ("config", "config"),
    ("num_warps", "warps"),
    ("registers", "regs"),
    ("spill_store_bytes", "spill st B"),
    ("spill_load_bytes", "spill ld B"),
    ("shared_bytes", "smem B"),
    ("max_load_bytes", "ld B/vec"),
    ("max_store_bytes", "st B/vec"),
    ("bytes_per_element", "B/elem"),
    ("units", "units"),
    ("budget", "budget"),
    ("status", "status"),
]


def format_static_table(rows: list[dict]) -> str:
    """The ``kdkit bench --static`` table: one line per kernel configuration."""
    head = [t for _, t in STATIC_COLUMNS]

    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    body = [[cell(r, k) for k, _ in STATIC_COLUMNS] for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    lines = [
        "kdkit bench --static — compiled for sm_90 with Triton's bundled compiler (no GPU); "
        "units = model's HBM traffic (see docs/kernels.md)",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    bad = [r for r in rows if r.get("status") != "ok"]
    for r in bad:
        lines.append(f"  {r['op']}.{r['kernel']} [{r['config']}]: {r.get('reason')}")
    spills = [r for r in rows if r.get("spill_store_bytes") or r.get("spill_load_bytes")]
    over = [r for r in rows if not r.get("within_budget", True)]
    lines.append(
        f"{len(rows)} kernel configurations; {len(spills)} spill; {len(over)} above their traffic "
        f"budget; {len(bad)} failed to compile"
    )
    return "\n".join(lines)
