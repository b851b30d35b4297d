"""Which Python packages the GPU check needs are missing here (run first by gpu_check.sh).

Prints one line per package (``ok NAME VERSION`` or ``MISSING NAME (pip name): why needed``) and
exits 3 when a required one is missing, 0 otherwise. Optional packages (Liger-Kernel for the
comparison, matplotlib for plots) only print a note.
"""

from __future__ import annotations

import importlib
import sys

#: (import name, pip name, why) — what kdkit's kernels, tests and ``kdkit bench`` import.
REQUIRED = [
    ("torch", "torch", "the kernels' tensors"),
    ("triton", "triton", "the kernels"),
    ("numpy", "numpy", "kdkit core"),
    (
        "pydantic",
        "pydantic (+ pydantic-core, annotated-types, typing-inspection)",
        "kdkit's options",
    ),
    ("pydantic_core", "pydantic-core", "pydantic's compiled core"),
    ("annotated_types", "annotated-types", "pydantic"),
    ("typing_inspection", "typing-inspection", "pydantic >= 2.11"),
    ("pluggy", "pluggy", "kdkit's plugin system (bench ops are plugins)"),
    ("yaml", "pyyaml", "kdkit config"),
    ("tqdm", "tqdm", "kdkit core"),
    ("safetensors", "safetensors", "kdkit core"),
    ("pytest", "pytest", "the correctness step"),
    ("hypothesis", "hypothesis", "the kernel tests"),
]
OPTIONAL = [
    ("liger_kernel", "liger-kernel", "the Liger-Kernel comparison rows"),
    ("matplotlib", "matplotlib", "plots (the script passes --no-plots without it)"),
    ("xdist", "pytest-xdist", "parallel Triton compiles in the correctness step"),
    ("datasets", "datasets (+ dill, multiprocess)", "kdkit's task plugins (not the kernels)"),
    ("transformers", "transformers", "kdkit's teacher plugin (not the kernels)"),
]


def _probe(name: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install
        return False, f"{type(exc).__name__}: {exc}"
    return True, str(getattr(mod, "__version__", "?"))


def main() -> int:
    missing = []
    for group, entries in (("required", REQUIRED), ("optional", OPTIONAL)):
        for name, pip_name, why in entries:
            ok, info = _probe(name)
            if ok:
                print(f"ok       {name} {info}")
            else:
                print(f"MISSING  {name} ({pip_name}; {group}): {why} — {info}")
                if group == "required":
                    missing.append(pip_name)
    if missing:
        print(
            "required packages are missing: " + "; ".join(missing) + ". On a machine with pip "
            "access run `bash benchmarks/fetch_device_wheels.sh` and carry .whl/ with the run "
            "(gpu_check.sh installs from it with pip --no-index)."
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
