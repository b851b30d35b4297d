"""infonce_loss: the cost model of the tiled Triton kernels and what ``--static`` compiles.

InfoNCE is bound by tensor-core FLOPs, not bytes: the unit is the floor ``6 B^2 d`` FLOPs of
forward + backward with both sides trainable (``2 B^2 d`` for the similarities, ``2 B^2 d``
each for ``dS t`` and ``dS^T s``). The kernels do ``10 B^2 d``: the forward's tile products, and
in backward each side recomputes its similarity tiles (``2 B^2 d`` twice) before its own
product. Units = 10 / 6. Bytes: every program streams the other side's ``[B, d]`` once per
kernel (from L2 when ``B d b`` fits: 12 MB at B = 8192, d = 768, bf16), and the fp32 gradient
accumulator is read and written once per column tile.
"""

from __future__ import annotations

from typing import Any

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: The documented limit in units of 6 B^2 d (the present kernels' 10 B^2 d).
BUDGET_UNITS = 10 / 6


def traffic(params: dict[str, Any], dtype: str) -> dict[str, Any]:
    """FLOP units (of ``6 B^2 d``) and HBM bytes per input element at ``{"b", "d"}``."""
    b, d = params["b"], params["d"]
    by = BYTES[dtype]
    from kdkit.kernels.infonce.triton import GPU_CONFIGS

    bm, bn = GPU_CONFIGS[0 if dtype == "fp32" else 1][:2]
    # per element of s and t: 3 kernels read both once (HBM), write ds, dt in the dtype, and the
    # fp32 accumulators are read-modified-written B / BN times (L2)
    return {
        "units": 10 / 6,
        "budget": BUDGET_UNITS,
        "bytes_per_element": 3 * by + by + 2 * 4,
        "l2_accumulator_bytes_per_element": 2 * 4 * (b // bn),
        "flops_per_element": 10 * b * d * b / (2 * b * d),
        "tile": f"{bm}x{bn}",
    }


def _spec(kernel, b, d, dtype, cfg, backward, label):
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    lowp = {"fp32": 0, "bf16": 1, "fp16": 2}[dtype]
    bm, bn, bd, warps, stages = cfg
    if backward:
        args = [
            ("x_ptr", p),
            ("y_ptr", p),
            ("stats_ptr", "*fp32"),
            ("out_ptr", "*fp32"),
            ("B", "i32"),
            ("D", "i32"),
            ("stride_x", "i32"),
            ("stride_y", "i32"),
            ("stride_o", "i32"),
            ("scale", "fp32"),
            ("LSE_ON_OTHER", "constexpr"),
            ("BM", "constexpr"),
            ("BN", "constexpr"),
            ("BD", "constexpr"),
            ("LOWP", "constexpr"),
        ]
        consts = dict(LSE_ON_OTHER=False, BM=bm, BN=bn, BD=bd, LOWP=lowp)
    else:
        args = [
            ("s_ptr", p),
            ("t_ptr", p),
            ("stats_ptr", "*fp32"),
            ("loss_ptr", "*fp32"),
            ("B", "i32"),
            ("D", "i32"),
            ("stride_s", "i32"),
            ("stride_t", "i32"),
            ("scale", "fp32"),
            ("BM", "constexpr"),
            ("BN", "constexpr"),
            ("BD", "constexpr"),
            ("LOWP", "constexpr"),
        ]
        consts = dict(BM=bm, BN=bn, BD=bd, LOWP=lowp)
    aligned = {a for a, t in args if t.startswith("*") or t == "i32"}
    return StaticSpec(
        "infonce_loss",
        kernel,
        args,
        consts,
        aligned,
        warps,
        stages,
        f"B={b} d={d} {dtype} {label}",
        {"b": b, "d": d},
        dtype,
    )


def static_specs(level: str = "priority") -> list:
    """The forward and backward kernels at the launcher's GPU configurations."""
    from kdkit.kernels.infonce.triton import (
        GPU_CONFIGS,
        _infonce_bwd_kernel,
        _infonce_fwd_kernel,
    )

    dtypes = ("bf16",) if level == "test" else ("bf16", "fp32")
    specs = []
    for dtype in dtypes:
        cfg = GPU_CONFIGS[0 if dtype == "fp32" else 1]
        label = "{}x{}x{} w{} s{}".format(*cfg)
        specs.append(_spec(_infonce_fwd_kernel, 8192, 768, dtype, cfg, False, label))
        specs.append(_spec(_infonce_bwd_kernel, 8192, 768, dtype, cfg, True, label))
    return specs
