"""ckd_loss: the traffic and FLOP model of the word-relation kernel and what ``--static`` compiles.

Unit: one pass over the student hidden states ``[B, K, T, Hs]`` in the storage dtype (``b`` bytes
per element). Floor: read the student (1) and the teacher (``Ht / Hs``) once and write the
gradient (1). The tile kernel (``_ckd_tile_kernel``; a program owns ``R = BT - 4W`` rows and loads
a halo of ``2W`` rows on each side):

* HBM reads: each row once (1 + Ht/Hs) — neighbouring tiles' halos overlap and are read from L2
  (a program's ``BT`` rows are re-read ``BT / R`` times per element in L2; twice for the student:
  its Gram and its ``dX`` product);
* the fp32 gradient ``[B, K, T, Hs]`` written once with plain stores (4 / b units; no atomics, no
  read-modify-write);
* backward (``_scale_cast_kernel``) reads it (4 / b) and writes the gradient in the dtype (1).

Total ``2 + Ht/Hs + 8/b``: 8 units in bf16 at Hs/Ht = 384/768 (the floor is 4), 6 in fp32. The
alternative that skips the fp32 buffer — the forward computes only the loss and backward
recomputes everything with ``grad_output`` — is ``3 + 2 Ht/Hs`` = 7 units but twice the FLOPs,
and the kernel is bound by FLOPs (below), not bytes.

FLOPs per student element (``flops_per_element``; multiply-adds count 2, every other arithmetic
or compare-select on a tile entry counts 1):

* Gram tiles ``2 BT^2 (Hs + Ht)`` and ``dX = (dG + dG^T) X`` ``2 BT^2 Hs`` per tile, over the
  ``R Hs`` owned elements;
* the relations: ``R + 2W`` anchors per tile (the ``2W`` halo anchors are recomputed, ``(R + 2W)
  / R`` times the work of the owned ones), each a masked pass over the ``[BT, BT]`` tile:
  ``RELATION_OPS`` operations per tile entry per anchor for both sides' relations, the residuals
  and ``dL/dG``.

At W = 10, BT = 64, R = 24 (Hs/Ht = 384/768): 1,024 (Grams) + 341 (dX) + 704 (relations) =
2,069 FLOPs per element, against about 8,400 for the one-program-per-anchor kernel it replaced
(a 32 x 32 window Gram per anchor, ``2 (2W+1)`` padded to 32 rows, plus 21 fp32 atomics per element).
"""

from __future__ import annotations

from typing import Any

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: Operations per tile entry per anchor, counted from ``_ckd_tile_kernel``'s anchor loop: each
#: side's relations 7 (selecting and summing the anchor's row 3, the numerator's 2 subtractions
#: and 2 multiplies by ``iu``), the residuals and loss 5, ``dL/dG`` 15, the window mask 2.
RELATION_OPS = 36


def _units(params: dict[str, Any], dtype: str) -> float:
    b = BYTES[dtype]
    return 1.0 + params["ht"] / params["hs"] + 4 / b + 4 / b + 1.0


def flops_per_element(params: dict[str, Any]) -> dict[str, float]:
    """FLOPs per student element of the tile kernel, by part (see the module docstring)."""
    from kdkit.kernels.ckd.triton import tile_rows

    w, hs, ht = params["w"], params["hs"], params["ht"]
    bt = tile_rows(w)
    r = bt - 4 * w
    per_elem = 1.0 / (r * hs)
    gram = 2 * bt * bt * (hs + ht) * per_elem
    dx = 2 * bt * bt * hs * per_elem
    relations = (r + 2 * w) * RELATION_OPS * bt * bt * per_elem
    return {
        "gram": gram,
        "dx": dx,
        "relations": relations,
        "total": gram + dx + relations,
        "tile_rows": bt,
        "owned_rows": r,
        "halo_anchor_recompute": (r + 2 * w) / r,
    }


def traffic(params: dict[str, Any], dtype: str) -> dict[str, Any]:
    """HBM units, L2 re-reads and FLOPs per student element at ``{"hs", "ht", "w", ...}``."""
    units = _units(params, dtype)
    flops = flops_per_element(params)
    bt, r = flops["tile_rows"], flops["owned_rows"]
    return {
        "units": units,
        # the floor (read both, write the gradient) + the fp32 gradient written and read once
        "budget": 2.0 + params["ht"] / params["hs"] + 8 / BYTES[dtype],
        "bytes_per_element": units * BYTES[dtype],
        "l2_atomic_bytes_per_element": 0,
        # halo re-reads from L2 per element: student twice (Gram, dX), teacher once
        "l2_reread_bytes_per_element": (bt / r) * BYTES[dtype] * (2 + params["ht"] / params["hs"]),
        "flops_per_element": flops["total"],
        "flops": flops,
    }


def static_specs(level: str = "priority") -> list:
    """The tile kernel at the launcher's GPU configuration (and the backward's scale kernel)."""
    from kdkit.kernels.ckd.triton import (
        GPU_CONFIGS,
        SCALE_BLOCK,
        _ckd_tile_kernel,
        _scale_cast_kernel,
        tile_rows,
    )
    from kdkit.kernels.static_spec import StaticSpec

    params = {"b": 16, "k": 7, "t": 512, "hs": 384, "ht": 768, "w": 10}
    specs = []
    for dtype in ("bf16",) if level == "test" else ("bf16", "fp32"):
        p = f"*{dtype}"
        args = [
            ("s_ptr", p),
            ("t_ptr", p),
            ("m_ptr", "*i32"),
            ("inv_ptr", "*fp32"),
            ("loss_ptr", "*fp32"),
            ("g_ptr", "*fp32"),
            ("K", "i32"),
            ("T", "i32"),
            ("Hs", "i32"),
            ("Ht", "i32"),
            ("n_tiles", "i32"),
            ("eps", "fp32"),
            ("W", "constexpr"),
            ("BT", "constexpr"),
            ("BH", "constexpr"),
            ("WRITE_GRAD", "constexpr"),
        ]
        aligned = {a for a, t in args if t.startswith("*")} | {"T", "Hs", "Ht"}
        bt = tile_rows(params["w"])
        bh, warps, stages = GPU_CONFIGS[bt]
        consts = {"W": params["w"], "BT": bt, "BH": bh, "WRITE_GRAD": True}
        specs.append(
            StaticSpec(
                "ckd_loss",
                _ckd_tile_kernel,
                args,
                consts,
                aligned,
                warps,
                stages,
                f"B=16 K=7 T=512 W=10 {dtype} BT{bt} BH{bh} w{warps} s{stages}",
                params,
                dtype,
            )
        )
        if level != "test":
            sargs = [("g_ptr", "*fp32"), ("go_ptr", "*fp32"), ("out_ptr", p), ("n", "i64")]
            sargs.append(("BLOCK", "constexpr"))
            specs.append(
                StaticSpec(
                    "ckd_loss",
                    _scale_cast_kernel,
                    sargs,
                    {"BLOCK": SCALE_BLOCK},
                    {"g_ptr", "go_ptr", "out_ptr", "n"},
                    8,
                    3,
                    f"backward scale {dtype} BLOCK{SCALE_BLOCK} w8",
                    params,
                    dtype,
                )
            )
    return specs
