"""kdkit's fused ops registered with the benchmark harness (entry point ``kernels``)."""

from __future__ import annotations

from kdkit.hookspecs import hookimpl


@hookimpl
def register_bench_ops(register):
    """Register kd_loss, dist_loss, infonce_loss, ckd_loss, fused_linear_kd and sparse_kd_loss
    with ``kdkit bench``."""
    from kdkit.kernels import bench_ops

    register("kd_loss", bench_ops.kd_bench_op, description="temperature KD (KL) + hard-label CE")
    register("dist_loss", bench_ops.dist_bench_op, description="DIST Pearson relations")
    register(
        "infonce_loss", bench_ops.infonce_bench_op, description="student-teacher InfoNCE (tiled)"
    )
    register("ckd_loss", bench_ops.ckd_bench_op, description="CKD word / layer relations")
    register(
        "fused_linear_kd",
        bench_ops.fused_linear_kd_bench_op,
        description="linear heads + KD, chunked",
    )
    register(
        "sparse_kd_loss",
        bench_ops.sparse_kd_bench_op,
        description="top-k(+tail) teacher KL, fused",
    )
