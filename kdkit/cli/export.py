"""`kdkit export`: a saved model as a Hugging Face folder or an ONNX model, for deployment.

`--format hf` writes a `save_pretrained` folder whose `config.json` carries the task's real
label names (`pipeline("text-classification", model=OUT)` prints them); `transformers` models
only. `--format onnx` writes `model.onnx` (opset 18, dynamic batch and sequence axes; every
student kind, the GRU included), its tokenizer and `onnx.json`, checks its logits against
PyTorch with ONNX Runtime and prints the latency and throughput of both (needs
`pip install 'kdkit[onnx]'`).

example:
  kdkit export runs/exception-kd-gru-0.06M-seed0 --format onnx --out exported/gru-onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdkit.errors import KdkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a saved model as a Hugging Face folder or ONNX",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="RUN_OR_MODEL",
        help="a run directory (its best model) or a model directory",
    )
    p.add_argument("--format", choices=("hf", "onnx"), required=True)
    p.add_argument(
        "--out",
        "-o",
        help="folder to write (default: MODEL_DIR-hf / MODEL_DIR-onnx beside the model)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="truncation of the check/timing examples (the graph takes any length)",
    )
    p.add_argument(
        "--no-timing", action="store_true", help="skip the latency/throughput measurement"
    )
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    """Export the model; print what was written (and, for ONNX, parity and timings) as JSON."""
    from kdkit.engine.persist import find_model_dir
    from kdkit.models import read_model_meta

    directory = find_model_dir(args.model)
    out = Path(args.out) if args.out else directory.with_name(f"{directory.name}-{args.format}")
    if args.format == "hf":
        from kdkit.export.hf import export_hf

        export_hf(directory, out)
        print(json.dumps({"format": "hf", "out": str(out)}, indent=2))
        print(f"load it with:  pipeline('text-classification', model='{out}')", file=sys.stderr)
        return 0
    from kdkit.discovery import load_plugins
    from kdkit.engine.persist import load_student
    from kdkit.export.onnx import export_onnx, require_onnx

    require_onnx()
    if args.max_length < 8:
        raise KdkitError(
            "--max-length must be at least 8", where="--max-length", fix="e.g. --max-length 128"
        )
    student = load_student(directory, load_plugins().registry)
    labels = read_model_meta(directory).get("labels")
    result = export_onnx(
        student,
        out,
        max_length=args.max_length,
        model_dir=directory,
        labels=labels,
        time_it=not args.no_timing,
    )
    print(json.dumps({"format": "onnx", "out": str(out), **result.as_dict()}, indent=2))
    for name, t in result.timings.items():
        print(
            f"{name:12s} latency {t['latency_ms']:8.2f} ms (batch 1)   throughput "
            f"{t['throughput']:8.1f} examples/s (batch {t['throughput_batch']})",
            file=sys.stderr,
        )
    return 0
