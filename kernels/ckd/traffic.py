"""ckd_loss: the traffic model of the word-relation kernel and what ``--static`` compiles.

Unit: one pass over the student hidden states ``[B, K, T, Hs]`` in the storage dtype. Floor:
read the student (1) and the teacher (``Ht / Hs``) once and write the gradient (1). The present
kernel, one program per ``(b, k, token)``:

* reads its ``2W + 1`` window rows of both sides: neighbouring programs share them, so HBM sees
  each row about once (1 + Ht/Hs) and L2 sees ``2W + 1`` reads;
* adds ``dX = (dG + dG^T) X`` into an fp32 ``[B, K, T, Hs]`` buffer with atomics: ``2W + 1``
  fp32 read-modify-writes per element in L2 (8 (2W+1) bytes), written back to HBM once in
  fp32 (4 / b units);
* backward reads that fp32 buffer (4 / b) and writes the gradient in the dtype (1).

Tiles of anchors with halos and no atomics (a program owning its output rows) would bring it to
the floor: left. The budget is the present model.
"""

from __future__ import annotations

from typing import Any

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def _units(params: dict[str, Any], dtype: str) -> float:
    b = BYTES[dtype]
    return 1.0 + params["ht"] / params["hs"] + 4 / b + 4 / b + 1.0


def traffic(params: dict[str, Any], dtype: str) -> dict[str, Any]:
    """HBM units and L2 atomic bytes per student element at ``{"hs", "ht", "w", ...}``."""
    units = _units(params, dtype)
    return {
        "units": units,
        "budget": units,
        "bytes_per_element": units * BYTES[dtype],
        "l2_atomic_bytes_per_element": 8 * (2 * params["w"] + 1),
        "flops_per_element": 4 * (2 * params["w"] + 1) * 2,
    }


def static_specs(level: str = "priority") -> list:
    """The word-relation kernel at the launcher's GPU configuration."""
    from kdkit.kernels.ckd.triton import GPU_CONFIG, _ckd_word_kernel
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
            ("eps", "fp32"),
            ("W", "constexpr"),
            ("BW", "constexpr"),
            ("BH", "constexpr"),
            ("WRITE_GRAD", "constexpr"),
        ]
        aligned = {a for a, t in args if t.startswith("*")} | {"T", "Hs", "Ht"}
        bh, warps = GPU_CONFIG
        consts = {"W": params["w"], "BW": 32, "BH": bh, "WRITE_GRAD": True}
        specs.append(
            StaticSpec(
                "ckd_loss",
                _ckd_word_kernel,
                args,
                consts,
                aligned,
                warps,
                3,
                f"B=16 K=7 T=512 W=10 {dtype} BH{bh} w{warps}",
                params,
                dtype,
            )
        )
    return specs
