"""kd_loss: the traffic model of the Triton kernels and what ``kdkit bench --static`` compiles.

Unit: one pass over an ``[N, C]`` tensor in the storage dtype (``N * C * b`` bytes). The floor
for forward + backward with a frozen teacher is 3 units: read ``z_s``, read ``z_t``, write the
gradient. The design reaches it (``docs/kernels.md``):

* forward sweep 1 reads both rows from HBM (2 units);
* sweep 2 re-reads them from L2: the persistent grid keeps ``programs x row bytes`` within
  ``L2_FRACTION`` of the L2 cache, so the rows in flight are still there (0 units; counted as 2
  when a single row pair is larger than that share of the L2);
* the gradient is written once (1 unit);
* backward with ``grad_output == 1`` launches a kernel whose programs return at once (0 units);
  otherwise fp32 scales in place (+2) and bf16/fp16 recompute from the logits (+3).
"""

from __future__ import annotations

from typing import Any

from kdkit.kernels.kd.grid import L2_FRACTION, persistent_programs

#: The device the model assumes (one H200, as torch reports it): L2 bytes, multiprocessors.
H200_L2_BYTES = 60 << 20
H200_SMS = 132
#: The documented limit (units, forward + backward, grad_output == 1).
BUDGET_UNITS = 3.0
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def traffic(params: dict[str, Any], dtype: str, grad_output_one: bool = True) -> dict[str, Any]:
    """HBM traffic of forward + backward at ``params = {"n", "c"}`` in units (see module doc)."""
    n, c = params["n"], params["c"]
    b = BYTES[dtype]
    row_bytes = 2 * c * b
    programs = persistent_programs(n, row_bytes, H200_L2_BYTES, H200_SMS)
    in_flight = programs * row_bytes
    sweep2 = 0.0 if in_flight <= H200_L2_BYTES * L2_FRACTION else 2.0
    backward = 0.0 if grad_output_one else (2.0 if dtype == "fp32" else 3.0)
    units = 2.0 + sweep2 + 1.0 + backward
    return {
        "units": units,
        "budget": BUDGET_UNITS,
        "bytes_per_element": units * b,
        # per element: sweep 1 three exp2 (student at T and at 1, teacher) + ~14 FLOPs of
        # online max/sum/KL; sweep 2 the same three exp2 + ~10 FLOPs for the gradient
        "flops_per_element": 24,
        "exp2_per_element": 6,
        "programs": programs,
        "in_flight_mb": round(in_flight / 2**20, 1),
        "sweep2_from": "L2" if sweep2 == 0 else "HBM",
        "units_grad_output_not_one": 3.0 + sweep2 + (2.0 if dtype == "fp32" else 3.0),
    }


def _fwd_spec(n, c, dtype, block, warps, stages, label, write_grad=True):
    from kdkit.kernels.kd.triton import _kd_fwd_kernel
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    args = [
        ("s_ptr", p),
        ("t_ptr", p),
        ("g_ptr", p),
        ("loss_ptr", "*fp32"),
        ("stats_ptr", "*fp32"),
        ("ws_ptr", "*fp32"),
        ("wh_ptr", "*fp32"),
        ("y_ptr", "*i64"),
        ("flag_ptr", "*i32"),
        ("N", "i32"),
        ("C", "i32"),
        ("stride_s", "i32"),
        ("stride_t", "i32"),
        ("stride_g", "i32"),
        ("scale", "fp32"),
        ("inv_t", "fp32"),
        ("SOFT_KL", "constexpr"),
        ("HAS_SOFT", "constexpr"),
        ("HAS_HARD", "constexpr"),
        ("WRITE_GRAD", "constexpr"),
        ("BLOCK", "constexpr"),
        ("VEC", "constexpr"),
    ]
    aligned = {a for a, t in args if t.startswith("*")} | {"N"}
    if c % 16 == 0:
        aligned |= {"C", "stride_s", "stride_t", "stride_g"}
    consts = dict(
        SOFT_KL=True,
        HAS_SOFT=True,
        HAS_HARD=True,
        WRITE_GRAD=write_grad,
        BLOCK=block,
        VEC=16 // BYTES[dtype],
    )
    return StaticSpec(
        "kd_loss",
        _kd_fwd_kernel,
        args,
        consts,
        aligned,
        warps,
        stages,
        f"N={n} C={c} {dtype} {label}",
        {"n": n, "c": c},
        dtype,
    )


def _bwd_spec(n, c, dtype, block, warps, stages, label):
    from kdkit.kernels.kd.triton import _kd_bwd_kernel
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    args = [
        ("s_ptr", p),
        ("t_ptr", p),
        ("g_ptr", p),
        ("stats_ptr", "*fp32"),
        ("ws_ptr", "*fp32"),
        ("wh_ptr", "*fp32"),
        ("y_ptr", "*i64"),
        ("go_ptr", "*fp32"),
        ("N", "i32"),
        ("C", "i32"),
        ("stride_s", "i32"),
        ("stride_t", "i32"),
        ("stride_g", "i32"),
        ("scale", "fp32"),
        ("inv_t", "fp32"),
        ("RECOMPUTE", "constexpr"),
        ("HAS_SOFT", "constexpr"),
        ("HAS_HARD", "constexpr"),
        ("BLOCK", "constexpr"),
        ("VEC", "constexpr"),
    ]
    aligned = {a for a, t in args if t.startswith("*")} | {"N"}
    if c % 16 == 0:
        aligned |= {"C", "stride_s", "stride_t", "stride_g"}
    consts = dict(
        RECOMPUTE=dtype != "fp32", HAS_SOFT=True, HAS_HARD=True, BLOCK=block, VEC=16 // BYTES[dtype]
    )
    return StaticSpec(
        "kd_loss",
        _kd_bwd_kernel,
        args,
        consts,
        aligned,
        warps,
        stages,
        f"N={n} C={c} {dtype} {label}",
        {"n": n, "c": c},
        dtype,
    )


def static_specs(level: str = "priority") -> list:
    """What ``kdkit bench --static`` compiles (``level="test"``: the few the test compiles)."""
    from kdkit.kernels.kd.triton import AUTOTUNE_CONFIGS, BWD_CONFIG

    if level == "test":
        return [
            _fwd_spec(8192, 32000, "bf16", 4096, 8, 2, "B4096 w8"),
            _fwd_spec(8192, 50257, "bf16", 4096, 8, 2, "B4096 w8"),
            _bwd_spec(8192, 32000, "bf16", *BWD_CONFIG, "B4096 w8"),
        ]
    specs = []
    for c in (32000, 128256, 50257):
        for dtype in ("bf16", "fp32"):
            for block, warps, stages in AUTOTUNE_CONFIGS:
                specs.append(
                    _fwd_spec(8192, c, dtype, block, warps, stages, f"B{block} w{warps} s{stages}")
                )
        block, warps, stages = BWD_CONFIG
        for dtype in ("bf16", "fp32"):
            specs.append(
                _bwd_spec(8192, c, dtype, block, warps, stages, f"B{block} w{warps} s{stages}")
            )
    return specs
