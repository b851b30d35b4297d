"""``kdkit bench --static``: every kernel compiles for sm_90 without spills, within its budget.

The compile runs in a subprocess (the kernel tests' TRITON_INTERPRET=1 turns kernels into
interpreted functions). ``--quick`` compiles a few priority configurations only (about 10 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kdkit.bench.static import access_widths
from kdkit.kernels.ckd import traffic as ckd_traffic
from kdkit.kernels.dist import traffic as dist_traffic
from kdkit.kernels.infonce import traffic as infonce_traffic
from kdkit.kernels.kd import traffic as kd_traffic
from tests.kernels.conftest import HAS_TRITON


@pytest.mark.parametrize("c", [32000, 128256, 50257])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_kd_traffic_model_is_three_units_at_priority_shapes(c, dtype):
    m = kd_traffic.traffic({"n": 8192, "c": c}, dtype)
    assert m["units"] == 3.0 <= m["budget"] == 3.0
    assert m["sweep2_from"] == "L2" and m["in_flight_mb"] <= 30.0
    assert m["bytes_per_element"] == 3 * kd_traffic.BYTES[dtype]
    # grad_output != 1: fp32 scales in place (+2), bf16 recomputes (+3)
    assert m["units_grad_output_not_one"] == (5.0 if dtype == "fp32" else 6.0)


def test_kd_persistent_grid_bounds_the_rows_in_flight():
    l2 = 60 << 20
    for c in (2, 20, 32000, 128256, 1 << 20):
        row = 2 * c * 2
        g = kd_traffic.persistent_programs(8192, row, l2, 132)
        assert 1 <= g <= 8192 and (g == 1 or g * row <= l2 * kd_traffic.L2_FRACTION)


def test_every_model_is_within_its_budget():
    assert (
        dist_traffic.traffic({"n": 8192, "c": 32000}, "bf16")["units"] <= dist_traffic.BUDGET_UNITS
    )
    inf = infonce_traffic.traffic({"b": 8192, "d": 768}, "bf16")
    # one recompute of each similarity tile: 8 B^2 d against the 6 B^2 d floor
    assert inf["units"] == pytest.approx(8 / 6) and inf["units"] <= inf["budget"]
    assert inf["flops_per_element"] == pytest.approx(4 * 8192)
    assert inf["ds_chunk_rows"] == 512 and inf["ds_chunk_mb"] == 8.0
    ckd = ckd_traffic.traffic({"b": 16, "k": 7, "t": 512, "hs": 384, "ht": 768, "w": 10}, "bf16")
    assert ckd["units"] == pytest.approx(1 + 2 + 2 + 2 + 1) and ckd["units"] <= ckd["budget"]
    assert ckd["l2_atomic_bytes_per_element"] == 0


def test_access_widths_reads_vector_and_async_accesses():
    ptx = """
        ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
        @%p1 ld.global.b16 { %rs1 }, [ %rd2 + 0 ];
        st.global.v2.b32 [ %rd3 + 0 ], { %r5, %r6 };
        cp.async.cg.shared.global [ %r66 + 0 ], [ %rd15 + 0 ], 0x10, %r67;
    """
    assert access_widths(ptx) == {"load": {2: 1, 16: 2}, "store": {8: 1}}


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
def test_static_check_compiles_priority_kernels_without_spills(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "static"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdkit",
            "bench",
            "--static",
            "--quick",
            "--ops",
            "kd,infonce",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 spill; 0 above their traffic budget; 0 failed to compile" in proc.stdout
    rows = json.loads((out / "static.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} >= {
        "_kd_fwd_kernel",
        "_kd_bwd_kernel",
        "_infonce_fwd_kernel",
        "_infonce_ds_kernel",
    }
    for r in rows:
        assert r["status"] == "ok" and r["registers"] > 0, r
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, r
        assert r["within_budget"], r
    kd = [r for r in rows if r["op"] == "kd_loss"]
    # 16-byte global loads for every C, also C = 50257 (not a multiple of 8)
    assert all(r["max_load_bytes"] == 16 and r["max_store_bytes"] == 16 for r in kd), kd
    assert any("C=50257" in r["config"] for r in kd)
