"""One rank of the 2-process (gloo) check of the batch-relational terms: writes OUT/rank{r}.pt.

python -m torch.distributed.run --nproc_per_node 2 relational_worker.py OUT
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as tdist

from tests.distributed.relational_cases import CASES, run


def main(out: str) -> None:
    """Every case on this rank's share; method gradients all-reduced (DDP's average)."""
    tdist.init_process_group("gloo")
    rank, world = tdist.get_rank(), tdist.get_world_size()
    results = {}
    for name in CASES:
        res = run(name, rank, world)
        for grad in res["params"].values():  # type: ignore[union-attr]
            tdist.all_reduce(grad)
            grad /= world
        results[name] = res
    from safetensors.torch import save_file

    flat = {}
    for name, res in results.items():
        flat[f"{name}.loss"] = torch.tensor(res["loss"], dtype=torch.float64)
        flat[f"{name}.rows"] = torch.tensor(res["rows"])
        flat[f"{name}.emb_grad"] = res["emb_grad"]
        flat[f"{name}.logit_grad"] = res["logit_grad"]
        for p, g in res["params"].items():  # type: ignore[union-attr]
            flat[f"{name}.param.{p}"] = g
    save_file({k: v.contiguous() for k, v in flat.items()}, f"{out}/rank{rank}.safetensors")
    # both ranks are done before either leaves: a rank whose peer closed the gloo pair early
    # aborts ("terminate called without an active exception"), seen once in CI
    tdist.barrier()
    tdist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
