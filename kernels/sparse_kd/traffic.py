"""sparse_kd_loss: the traffic model of the Triton kernels and what ``kdkit bench --static`` compiles.

Unit: one pass over the student's ``[N, C]`` logits in the storage dtype (``N * C * b`` bytes).
The floor for forward + backward is: read the student row once (1), write its gradient once (1),
and read each row's ``k`` ids and log-probabilities plus a few per-row scalars (the side band,
``(8 k + 32) / (C b)`` units: int32 id + fp32 log p per entry; tail, weight, loss, 5 statistics
per row). The design reaches it (``docs/kernels.md``):

* sweep 1 reads the row from HBM (1 unit);
* sweeps 2 and 3 and the gather of the ``k`` student logits re-read it from L2: the persistent
  grid keeps ``programs x (student row + gradient row)`` within ``L2_FRACTION`` of the L2 (0
  units; counted as 2 when a single row pair is larger than that share);
* the gradient is written once (1 unit), the ``k`` top-k entries twice (their second write is
  in the side band's order of magnitude and hits the same L2 lines);
* backward with ``grad_output == 1`` returns at once (0); otherwise fp32 scales in place (+2) and
  bf16/fp16 recompute from the logits and the saved statistics (+2: read the row, write it).
"""

from __future__ import annotations

from typing import Any

from kdkit.kernels.kd.grid import L2_FRACTION, persistent_programs
from kdkit.kernels.kd.traffic import BYTES, H200_L2_BYTES, H200_SMS

#: Fixed bytes per row besides the k entries: tail log-mass, weight, loss (4 each) and the five
#: fp32 statistics kept for the backward.
ROW_BYTES = 12 + 20
#: Bytes per top-k entry: an int32 id and an fp32 log-probability.
ENTRY_BYTES = 8


def side_band_units(c: int, k: int, b: int) -> float:
    """The per-row teacher data and statistics, in units of one pass over the student."""
    return (ENTRY_BYTES * k + ROW_BYTES) / (c * b)


def traffic(params: dict[str, Any], dtype: str, grad_output_one: bool = True) -> dict[str, Any]:
    """HBM traffic of forward + backward at ``params = {"n", "c", "k"}`` in units (module doc)."""
    n, c, k = params["n"], params["c"], params["k"]
    b = BYTES[dtype]
    row_bytes = 2 * c * b  # the student row and its gradient row, in flight together
    programs = persistent_programs(n, row_bytes, H200_L2_BYTES, H200_SMS)
    in_flight = programs * row_bytes
    rereads = 0.0 if in_flight <= H200_L2_BYTES * L2_FRACTION else 2.0
    side = side_band_units(c, k, b)
    backward = 0.0 if grad_output_one else 2.0
    units = 1.0 + rereads + 1.0 + side + backward
    return {
        "units": units,
        "budget": 2.0 + side,  # the floor
        "bytes_per_element": units * b,
        "side_band_units": side,
        # per element: sweep 1 a max; sweep 2 one exp2, a convert and a float64 add; sweep 3 two
        # exp2 and ~6 FLOPs for the gradient
        "flops_per_element": 12,
        "exp2_per_element": 3,
        "programs": programs,
        "in_flight_mb": round(in_flight / 2**20, 1),
        "rereads_from": "L2" if rereads == 0 else "HBM",
        "units_grad_output_not_one": 2.0 + rereads + side + 2.0,
    }


def _fwd_spec(n, c, k, dtype, block, warps, stages, label):
    from kdkit.kernels.sparse_kd.triton import _sparse_kd_fwd_kernel, kblock_for
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    args = [
        ("s_ptr", p),
        ("g_ptr", p),
        ("i_ptr", "*i32"),
        ("lp_ptr", "*fp32"),
        ("lq_ptr", "*fp32"),
        ("w_ptr", "*fp32"),
        ("loss_ptr", "*fp32"),
        ("stats_ptr", "*fp32"),
        ("N", "i32"),
        ("C", "i32"),
        ("K", "i32"),
        ("stride_s", "i32"),
        ("stride_g", "i32"),
        ("scale", "fp32"),
        ("inv_t", "fp32"),
        ("WRITE_GRAD", "constexpr"),
        ("BLOCK", "constexpr"),
        ("KBLOCK", "constexpr"),
        ("VEC", "constexpr"),
    ]
    aligned = {a for a, t in args if t.startswith("*")} | {"N"}
    if c % 16 == 0:
        aligned |= {"C", "stride_s", "stride_g"}
    if k % 16 == 0:
        aligned |= {"K"}
    consts = dict(WRITE_GRAD=True, BLOCK=block, KBLOCK=kblock_for(k), VEC=16 // BYTES[dtype])
    return StaticSpec(
        "sparse_kd_loss",
        _sparse_kd_fwd_kernel,
        args,
        consts,
        aligned,
        warps,
        stages,
        f"N={n} C={c} k={k} {dtype} {label}",
        {"n": n, "c": c, "k": k},
        dtype,
    )


def _bwd_spec(n, c, k, dtype, block, warps, stages, label):
    from kdkit.kernels.sparse_kd.triton import _sparse_kd_bwd_kernel, kblock_for
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    args = [
        ("s_ptr", p),
        ("g_ptr", p),
        ("i_ptr", "*i32"),
        ("lp_ptr", "*fp32"),
        ("w_ptr", "*fp32"),
        ("stats_ptr", "*fp32"),
        ("go_ptr", "*fp32"),
        ("N", "i32"),
        ("C", "i32"),
        ("K", "i32"),
        ("stride_s", "i32"),
        ("stride_g", "i32"),
        ("go_stride", "i32"),
        ("scale", "fp32"),
        ("inv_t", "fp32"),
        ("RECOMPUTE", "constexpr"),
        ("BLOCK", "constexpr"),
        ("KBLOCK", "constexpr"),
        ("VEC", "constexpr"),
    ]
    aligned = {a for a, t in args if t.startswith("*")} | {"N"}
    if c % 16 == 0:
        aligned |= {"C", "stride_s", "stride_g"}
    consts = dict(
        RECOMPUTE=dtype != "fp32", BLOCK=block, KBLOCK=kblock_for(k), VEC=16 // BYTES[dtype]
    )
    return StaticSpec(
        "sparse_kd_loss",
        _sparse_kd_bwd_kernel,
        args,
        consts,
        aligned,
        warps,
        stages,
        f"N={n} C={c} k={k} {dtype} {label}",
        {"n": n, "c": c, "k": k},
        dtype,
    )


def static_specs(level: str = "priority") -> list:
    """What ``kdkit bench --static`` compiles (``level="test"``: the few the test compiles)."""
    from kdkit.kernels.sparse_kd.triton import GPU_CONFIG

    block, warps, stages = GPU_CONFIG
    cfg = f"B{block} w{warps} s{stages}"
    if level == "test":
        return [
            _fwd_spec(8192, 32000, 128, "bf16", block, warps, stages, cfg),
            _bwd_spec(8192, 32000, 128, "bf16", block, warps, stages, cfg),
        ]
    specs = []
    for c in (32000, 128256, 50257):
        for dtype in ("bf16", "fp32"):
            specs.append(_fwd_spec(8192, c, 128, dtype, block, warps, stages, cfg))
            specs.append(_bwd_spec(8192, c, 128, dtype, block, warps, stages, cfg))
    # k = 8 (one small chunk) and k = 1024 (four chunks of MAX_KBLOCK)
    specs.append(_fwd_spec(8192, 32000, 8, "bf16", block, warps, stages, cfg))
    specs.append(_fwd_spec(8192, 128256, 1024, "bf16", block, warps, stages, cfg))
    return specs
