"""How far DIST trained from a top-k cache (k < C) is from DIST on full logits: docs/caching.md.

    python benchmarks/dist_topk_error.py [--rows 64] [--seed 0] [--out PATH]

DIST (``kdkit.kernels.dist_loss``, beta = gamma = 1, its defaults) reads ``ModelOutput.logits``;
from a top-k entry that is the dense reconstruction ``kdkit.engine.topk_cache.dense_logits``:
``T0 log p_i`` for the top-k classes and ``T0 log(q / (C - k))`` for each of the ``C - k``
others (the tail spread evenly). This measures, on the same student logits, the float64 DIST
loss and student gradient from that reconstruction against those from the full teacher logits:
the relative loss error ``|sparse - full| / full``, the relative L2 error of the gradient, its
cosine with the full gradient, and, for context, the teacher's tail mass ``q`` at the loss
temperature and the total-variation distance between the reconstructed and the true teacher
distributions at that temperature. Settings: T = 1 stored at T0 = 1 (the defaults), T = 2 stored
at T0 = 2 (stored at the training temperature), and T = 2 from values stored at T0 = 1 (the
reconstruction is rescaled by softmax(T0 log p / T), its tail still spread evenly).

Teachers (``rows`` x C logits, float64): ``classifier`` (2 N(0, 1) + 8 on one class per row: a
trained classifier's confident, not saturated, outputs), ``peaked`` (4 N(0, 1) + 20 on one class:
nearly one-hot), ``flat`` (0.3 N(0, 1): nearly uniform, the worst case for a top-k), ``zipf``
(p proportional to rank^-2 in a random order, 0.1 N(0, 1) logit noise: a language-model-like
long tail). Students: the teacher's logits plus 2 N(0, 1) noise (part-way through training), as
in ``benchmarks/sparse_kd_error.py``. C in {20 (kdkit's exception task), 1000, 32000}; k in
{4, 8, 32, 128} below C, and k = C (exact: the reconstruction is the logits up to a per-row
constant).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from kdkit.engine.topk_cache import dense_logits
from kdkit.kernels import dist_loss, topk_teacher

TEACHERS = ("classifier", "peaked", "flat", "zipf")
CLASSES = (20, 1000, 32000)
#: (loss temperature, temperature the top-k was stored at)
SETTINGS = ((1.0, 1.0), (2.0, 2.0), (2.0, 1.0))
DEFAULT_OUT = Path(__file__).with_name("results") / "dist_topk_error.json"


def teacher_logits(kind: str, n: int, c: int, g: torch.Generator) -> torch.Tensor:
    """``[n, c]`` float64 teacher logits of one family (see the module docstring)."""
    noise = torch.randn(n, c, generator=g, dtype=torch.float64)
    if kind in ("classifier", "peaked"):
        scale, margin = (2.0, 8.0) if kind == "classifier" else (4.0, 20.0)
        target = torch.randint(0, c, (n,), generator=g)
        return scale * noise + margin * torch.nn.functional.one_hot(target, c).double()
    if kind == "flat":
        return 0.3 * noise
    ranks = torch.stack([torch.randperm(c, generator=g) for _ in range(n)]) + 1
    return -2.0 * ranks.double().log() + 0.1 * noise


def k_grid(c: int) -> list[int]:
    """The k measured for ``c`` classes: 4, 8, 32, 128 below C, then C itself."""
    return [k for k in (4, 8, 32, 128) if k < c] + [c]


def measure(zs: torch.Tensor, zt: torch.Tensor, k: int, t: float, stored_at: float) -> dict:
    """DIST from the top-k reconstruction of ``zt`` against DIST from ``zt`` itself."""
    top = topk_teacher(zt, k, stored_at)
    recon = dense_logits(top).double()  # what a run from a top-k entry feeds DIST
    x = zs.clone().requires_grad_()
    y = zs.clone().requires_grad_()
    sparse = dist_loss(x, recon, temperature=t, impl="reference")
    full = dist_loss(y, zt, temperature=t, impl="reference")
    sparse.backward()
    full.backward()
    p_hat, p = torch.softmax(recon / t, -1), torch.softmax(zt / t, -1)
    q = 1.0 - p.topk(k, dim=-1).values.sum(-1)  # the tail's true mass at T
    cos = torch.nn.functional.cosine_similarity(x.grad.flatten(), y.grad.flatten(), 0)
    return {
        "tail_mass": q.clamp_min(0).mean().item(),
        "teacher_tv": 0.5 * (p_hat - p).abs().sum(-1).mean().item(),
        "loss_full": full.item(),
        "loss_rel_error": (abs(sparse.item() - full.item()) / abs(full.item())),
        "grad_rel_error": ((x.grad - y.grad).norm() / y.grad.norm()).item(),
        "grad_cosine": cos.item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    args = ap.parse_args()
    rows = []
    print(
        "| teacher | C | k | T (stored at) | tail mass q | teacher TV | loss rel. error "
        "| grad rel. L2 error | grad cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in TEACHERS:
        for c in CLASSES:
            g = torch.Generator().manual_seed(args.seed)
            zt = teacher_logits(kind, args.rows, c, g)
            zs = zt + 2.0 * torch.randn(args.rows, c, generator=g, dtype=torch.float64)
            for k in k_grid(c):
                for t, stored in SETTINGS:
                    m = measure(zs, zt, k, t, stored)
                    rows.append({"teacher": kind, "C": c, "k": k, "T": t, "stored_at": stored, **m})
                    print(
                        f"| {kind} | {c} | {k} | {t:g} ({stored:g}) | {m['tail_mass']:.3g} "
                        f"| {m['teacher_tv']:.3g} | {m['loss_rel_error']:.3g} "
                        f"| {m['grad_rel_error']:.3g} | {m['grad_cosine']:.4f} |",
                        flush=True,
                    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"rows": args.rows, "seed": args.seed, "torch": torch.__version__}
    meta["platform"] = platform.platform()
    out.write_text(json.dumps({"config": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
