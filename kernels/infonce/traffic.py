"""infonce_loss: the cost model of the tiled Triton kernels and what ``--static`` compiles.

InfoNCE is bound by tensor-core FLOPs, not bytes: the unit is the floor ``6 B^2 d`` FLOPs of
forward + backward with both sides trainable (``2 B^2 d`` for the similarities, ``2 B^2 d``
each for ``dS t`` and ``dS^T s``). The kernels do ``8 B^2 d``: the forward's tile products
(``2 B^2 d``), the backward's one recompute of each similarity tile (``2 B^2 d``,
``_infonce_ds_kernel``, which writes ``dS = P - I`` per chunk of student rows) and the two GEMMs
over each chunk (``4 B^2 d``). Units = 8 / 6 (was 10 / 6: each side's backward kernel
recomputed the tiles). With a frozen teacher the ``dS^T s`` GEMM is skipped (``6 B^2 d`` against
a ``4 B^2 d`` floor).

Bytes: the forward and the dS kernel stream the other side's ``[B, d]`` once per row block
(from L2 when ``B d b`` fits: 12 MB at B = 8192, d = 768, bf16); ``dS`` is written once and read
by the two GEMMs, ``3 B^2 b_dS`` bytes in all (0.4 GB at B = 8192 in bf16: 0.09 ms at 4.3 TB/s,
against the 0.39 ms FLOP floor); the fp32 ``dt`` accumulator is read and written once per chunk.
"""

from __future__ import annotations

from typing import Any

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: The documented limit in units of 6 B^2 d (the kernels' 8 B^2 d: one recompute).
BUDGET_UNITS = 8 / 6


def traffic(params: dict[str, Any], dtype: str) -> dict[str, Any]:
    """FLOP units (of ``6 B^2 d``) and HBM bytes per input element at ``{"b", "d"}``."""
    b, d = params["b"], params["d"]
    by = BYTES[dtype]
    from kdkit.kernels.infonce.triton import GPU_CONFIGS, chunk_rows

    bm, bn = GPU_CONFIGS[0 if dtype == "fp32" else 1][:2]
    ch = chunk_rows(b, bm)
    n_chunks = -(-b // ch)
    # per element of s and t: the forward and the dS kernel read both (HBM), the GEMMs read both
    # once per chunk (t) or once (s), ds and dt written in the dtype; dS: B^2 entries written
    # once, read twice, spread over the 2 B d input elements; the fp32 dt accumulator is
    # read-modified-written once per chunk
    return {
        "units": 8 / 6,
        "budget": BUDGET_UNITS,
        "bytes_per_element": 2 * by + (n_chunks + 1) / 2 * by + by + 3 * b * b * by / (2 * b * d),
        "ds_chunk_rows": ch,
        "ds_chunk_mb": ch * b * by / 2**20,
        "l2_accumulator_bytes_per_element": 4 * n_chunks,
        "flops_per_element": 8 * b * d * b / (2 * b * d),
        "tile": f"{bm}x{bn}",
    }


def _spec(kernel, b, d, dtype, cfg, backward, label):
    from kdkit.kernels.static_spec import StaticSpec

    p = f"*{dtype}"
    lowp = {"fp32": 0, "bf16": 1, "fp16": 2}[dtype]
    bm, bn, bd, warps, stages = cfg
    if backward:
        args = [
            ("s_ptr", p),
            ("t_ptr", p),
            ("stats_ptr", "*fp32"),
            ("ds_ptr", p),
            ("B", "i32"),
            ("D", "i32"),
            ("row0", "i32"),
            ("n_rows", "i32"),
            ("stride_s", "i32"),
            ("stride_t", "i32"),
            ("stride_ds", "i32"),
            ("scale", "fp32"),
            ("BM", "constexpr"),
            ("BN", "constexpr"),
            ("BD", "constexpr"),
            ("LOWP", "constexpr"),
        ]
        consts = dict(BM=bm, BN=bn, BD=bd, LOWP=lowp)
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
    """The forward and the backward's dS kernel at the launcher's GPU configurations."""
    from kdkit.kernels.infonce.triton import (
        GPU_CONFIGS,
        _infonce_ds_kernel,
        _infonce_fwd_kernel,
    )

    dtypes = ("bf16",) if level == "test" else ("bf16", "fp32")
    specs = []
    for dtype in dtypes:
        cfg = GPU_CONFIGS[0 if dtype == "fp32" else 1]
        label = "{}x{}x{} w{} s{}".format(*cfg)
        specs.append(_spec(_infonce_fwd_kernel, 8192, 768, dtype, cfg, False, label))
        specs.append(_spec(_infonce_ds_kernel, 8192, 768, dtype, cfg, True, label))
    return specs
