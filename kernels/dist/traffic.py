"""dist_loss: the traffic model of the Triton kernels and what ``kdkit bench --static`` compiles.

Unit: one pass over an ``[N, C]`` tensor in the storage dtype. Floor: 3 (read both, write the
gradient). The kernels make 7 HBM passes' worth, forward + backward:

* ``_dist_rows``: sweep 1 reads both rows (2); sweep 2 (centred sums) re-reads them in reverse
  order, from L2 while a row pair fits (0);
* ``_dist_cols``: per block of columns, one sweep over the column strip of both tensors (2):
  each tile's column means and centred sums are merged with Chan's formula (it was two sweeps,
  4 units: a strip, ``N x 128`` of two tensors, times the programs in flight does not fit in
  L2, so the second sweep came from HBM);
* ``_dist_grad``: reads both rows for ``sum p_s g_p`` (2), re-reads them from L2 (0), writes the
  gradient (1).

No raw moments anywhere (their cancellation loses the Pearson correlation of near-uniform
columns). 5 units (the column statistics gathered in the row kernel's L2 sweep, merged by a
second kernel over per-tile partials) is not reachable at C = 32,000: a program owning ``BR``
rows writes ``20 / (BR b)`` units of fp32 partials (read again by the merge), and its sweep 2 is
L2-resident only for ``BR <= ~2`` (``SMs * BR * C * 2b <= L2 / 2``), where the partials cost
~10 units; see docs/kernels.md.
"""

from __future__ import annotations

from typing import Any

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: The documented limit (units, forward + backward).
BUDGET_UNITS = 7.0


def traffic(params: dict[str, Any], dtype: str) -> dict[str, Any]:
    """HBM passes of forward + backward at ``{"n", "c"}``."""
    units = 2.0 + 2.0 + 3.0
    return {
        "units": units,
        "budget": BUDGET_UNITS,
        "bytes_per_element": units * BYTES[dtype],
        "flops_per_element": 40,
        "exp2_per_element": 8,
    }


def static_specs(level: str = "priority") -> list:
    """The three kernels at the launcher's GPU configuration (``_configs``)."""
    from kdkit.kernels.static_spec import StaticSpec
    from kdkit.kernels.dist.triton import _dist_cols, _dist_grad, _dist_rows, gpu_configs

    shapes = [(8192, 32000)] if level == "test" else [(8192, 32000), (1024, 20)]
    specs = []
    for n, c in shapes:
        block, br, bc, warps = gpu_configs(c)
        for dtype in ("bf16",) if level == "test" else ("bf16", "fp32"):
            p = f"*{dtype}"
            label = f"N={n} C={c} {dtype}"
            aligned_int = {"N", "C", "stride_s", "stride_t", "stride_g"} if c % 16 == 0 else {"N"}
            rows = [("s_ptr", p), ("t_ptr", p), ("lse_ptr", "*fp32"), ("stats_ptr", "*fp32"),
                    ("N", "i32"), ("C", "i32"), ("stride_s", "i32"), ("stride_t", "i32"),
                    ("scale", "fp32"), ("inv_c", "fp32"), ("BLOCK", "constexpr")]
            cols = rows[:9] + [("inv_n", "fp32"), ("BR", "constexpr"), ("BC", "constexpr")]
            grad = [("s_ptr", p), ("t_ptr", p), ("g_ptr", p), ("lse_ptr", "*fp32"),
                    ("rowc_ptr", "*fp32"), ("colc_ptr", "*fp32"), ("go_ptr", "*fp32"),
                    ("N", "i32"), ("C", "i32"), ("stride_s", "i32"), ("stride_t", "i32"),
                    ("stride_g", "i32"), ("scale", "fp32"), ("inv_t", "fp32"), ("inv_c", "fp32"),
                    ("BLOCK", "constexpr")]
            for kernel, args, consts in (
                (_dist_rows, rows, {"BLOCK": block}),
                (_dist_cols, cols, {"BR": br, "BC": bc}),
                (_dist_grad, grad, {"BLOCK": block}),
            ):
                aligned = {a for a, t in args if t.startswith("*")} | (
                    aligned_int & {a for a, _ in args}
                )
                specs.append(StaticSpec("dist_loss", kernel, args, consts, aligned, warps, 3,
                                        label, {"n": n, "c": c}, dtype))
    return specs
