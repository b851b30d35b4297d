"""ONNX export of a saved model, its parity check against PyTorch, and ONNX Runtime timings.

``torch.onnx.export``, opset :data:`OPSET`, dynamic ``batch`` and ``sequence`` axes on every
input. The dynamo exporter (``torch.export``) by default; a module whose ``onnx_exporter`` is
``"torchscript"`` (the GRU's padded path) uses the tracing exporter, which is exact for it and
an order of magnitude faster (in torch 2.13 the dynamo exporter fixed the GRU's sequence axis
when a second model was exported in the same process; :func:`fixed_axes` refuses such a graph). The graph is the student's ``export_module()``
(see :mod:`kdkit.export`): inputs ``input_ids`` and ``attention_mask`` (int64 ``[batch,
sequence]``, right-padded; ``token_type_ids`` too for BERT-family models), output ``logits``
``[batch, num_labels]``. The folder written holds ``model.onnx``, the tokenizer, ``config.json``
(with ``id2label``) where the model has one, and ``onnx.json`` (inputs, opset, labels, the parity
and timings measured at export).

onnx, onnxscript and onnxruntime are the optional extra ``kdkit[onnx]``.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from kdkit.api import Encoded, Example, Needs
from kdkit.errors import KdkitError

#: ONNX opset of every export (ONNX Runtime >= 1.14 runs it; the dynamo exporter's default).
OPSET = 18

#: Real-looking code that traces the graph and checks parity when no examples are given.
SAMPLE_CODE: tuple[str, ...] = (
    "def add(a, b):\n    return a + b\n",
    "def read(path):\n    try:\n        with open(path) as fh:\n            return fh.read()\n"
    "    except OSError:\n        return None\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "x = 1",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "import json\n\ndef load(text):\n    return json.loads(text)['key']\n",
)

_EXTRA_HINT = "pip install 'kdkit[onnx]' (onnx, onnxscript and onnxruntime)"


def onnx_available() -> bool:
    """Whether onnx, onnxscript (the exporter) and onnxruntime (parity, timings) are installed."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")
    )


def require_onnx() -> None:
    """Raise a :class:`KdkitError` naming the extra when the ONNX packages are missing."""
    if not onnx_available():
        raise KdkitError(
            "ONNX export needs onnx, onnxscript and onnxruntime, which are not installed",
            fix=_EXTRA_HINT,
        )


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the ``model.onnx`` file.
        input_names: the graph's inputs, in order.
        opset: its ONNX opset.
        max_abs_diff: largest ``|logits_onnx - logits_torch|`` over the check examples.
        argmax_agreement: fraction of check examples whose predicted class is the same.
        timings: ``{"pytorch": {...}, "onnxruntime": {...}}``, each with ``latency_ms``
            (batch 1, median) and ``throughput`` (examples/s at ``throughput_batch``).
    """

    path: Path
    input_names: tuple[str, ...]
    opset: int
    max_abs_diff: float
    argmax_agreement: float
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``onnx.json``, ``kdkit export``'s output)."""
        d = asdict(self)
        d["path"], d["input_names"] = str(self.path), list(self.input_names)
        return d


def _inputs(encoded: Encoded, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The tensors of ``encoded`` in the order of ``names`` (int64)."""
    table = {
        "input_ids": encoded.input_ids,
        "attention_mask": encoded.attention_mask,
        **encoded.extra,
    }
    missing = [n for n in names if n not in table]
    if missing:
        raise KdkitError(
            f"the model's export graph takes {missing}, which its encoding lacks",
            fix="the student's export_module().input_names must name inputs its encode() gives",
        )
    return tuple(table[n].to(torch.long) for n in names)


def export_module_of(student: Any) -> torch.nn.Module:
    """The student's ``export_module()``, with a clear error for a kind that has none."""
    make = getattr(student, "export_module", None)
    if make is None:
        raise KdkitError(
            f"the model {student.info.name} ({type(student).__name__}) cannot be "
            "exported: it has no export_module()",
            fix="its plugin must give the student an export_module() returning an "
            "nn.Module (input_names -> logits); see docs/export.md",
        )
    # a private copy: the exporter leaves state on the modules it traces (a second export of
    # the same modules in one process came out with a fixed sequence length)
    module = copy.deepcopy(make()).eval()
    if not getattr(module, "input_names", None):
        raise KdkitError(
            f"the export module of {student.info.name} names no inputs",
            fix="set input_names on the module export_module() returns",
        )
    return module


def export_onnx(
    student: Any,
    out: str | Path,
    *,
    examples: Sequence[Example] = SAMPLE_CODE,
    max_length: int = 128,
    model_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
    time_it: bool = True,
    throughput_batch: int = 32,
) -> OnnxExport:
    """Export ``student`` to ``out/model.onnx``, check it against PyTorch, and time both.

    Args:
        student: a loaded :class:`kdkit.api.Student` with ``export_module()`` (on CPU).
        out: the folder to write (created; must be empty).
        examples: texts (or pairs) to trace with and to check parity on.
        max_length: their truncation length.
        model_dir: the saved model folder, whose ``config.json`` is copied beside the graph.
        labels: class names, recorded in ``onnx.json``.
        time_it: also measure latency/throughput of PyTorch and ONNX Runtime.
        throughput_batch: the batch of the throughput measurement.
    """
    require_onnx()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise KdkitError(
            "the output directory is not empty",
            where=str(out),
            fix="choose a new --out directory (kdkit never overwrites)",
        )
    out.mkdir(parents=True, exist_ok=True)
    student = student.to("cpu").eval()
    module = export_module_of(student)
    names = tuple(cast(Sequence[str], module.input_names))
    encoded = student.encode(list(examples), max_length)
    sample = _inputs(encoded, names)
    path = out / "model.onnx"
    exporter = getattr(module, "onnx_exporter", "dynamo")
    with torch.no_grad():
        if exporter == "torchscript":  # the module says the tracing exporter is exact for it
            torch.onnx.export(
                module,
                sample,
                str(path),
                input_names=list(names),
                output_names=["logits"],
                opset_version=OPSET,
                dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
            )
        else:
            batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(
                module,
                sample,
                str(path),
                input_names=list(names),
                output_names=["logits"],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=tuple({0: batch, 1: sequence} for _ in names),
                verbose=False,
            )
    fixed = fixed_axes(path)
    if fixed:  # never hand out a graph that only takes the traced shape
        raise KdkitError(
            f"the exported graph has fixed axes {fixed} instead of dynamic ones",
            where=str(path),
            fix="export in a fresh process (kdkit export ...); "
            "if it persists, report it with the model kind",
        )
    session = ort_session(path)
    diff, agree = parity(module, session, names, encoded)
    result = OnnxExport(path, names, OPSET, diff, agree)
    if time_it:
        result.timings = compare_timings(
            student, session, names, list(examples), max_length, batch=throughput_batch
        )
    tokenizer = getattr(student, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        shutil.copy2(Path(model_dir) / "config.json", out / "config.json")
    meta = {
        "format": "onnx",
        "opset": OPSET,
        "inputs": list(names),
        "outputs": ["logits"],
        "dynamic_axes": {n: {"0": "batch", "1": "sequence"} for n in names},
        "labels": list(labels) if labels else None,
        "model": student.info.name,
        "parity": {"max_abs_diff": diff, "argmax_agreement": agree},
        "timings": result.timings,
    }
    (out / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return result


def fixed_axes(path: str | Path) -> dict[str, list[int]]:
    """Inputs of the ONNX graph whose batch or sequence axis is a fixed number (should be none)."""
    import onnx

    out = {}
    for inp in onnx.load(str(path), load_external_data=False).graph.input:
        dims = inp.type.tensor_type.shape.dim[:2]
        fixed = [i for i, d in enumerate(dims) if not d.dim_param]
        if fixed:
            out[inp.name] = fixed
    return out


def ort_session(path: str | Path) -> Any:
    """An ONNX Runtime CPU session on ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: Any, names: Sequence[str], encoded: Encoded) -> torch.Tensor:
    """Logits ``[B, C]`` of the ONNX graph on ``encoded``."""
    feeds = {n: t.cpu().numpy() for n, t in zip(names, _inputs(encoded, names))}
    return torch.from_numpy(session.run(["logits"], feeds)[0])


def parity(
    module: torch.nn.Module, session: Any, names: Sequence[str], encoded: Encoded
) -> tuple[float, float]:
    """(max |ONNX - PyTorch| over the logits, fraction of equal argmaxes) on ``encoded``."""
    with torch.no_grad():
        ref = module(*_inputs(encoded, names)).float()
    got = run_session(session, names, encoded).float()
    diff = float((got - ref).abs().max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    return diff, agree


def _median_seconds(fn: Callable[[], Any], *, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare_timings(
    student: Any,
    session: Any,
    names: Sequence[str],
    examples: Sequence[Example],
    max_length: int,
    *,
    batch: int = 32,
    repeats: int = 10,
) -> dict[str, dict[str, float]]:
    """Latency (batch 1, median ms) and throughput (examples/s at ``batch``): PyTorch vs ORT.

    Both run the same tokenised inputs on the CPU in this process, one after the other, so their
    ratio is meaningful; tokenisation is excluded.
    """
    rows = list(examples)
    big = (rows * (batch // max(len(rows), 1) + 1))[:batch]
    one = student.encode(rows[:1], max_length)
    many = student.encode(big, max_length)
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        runners: dict[str, Callable[[Any], Any]] = {
            "pytorch": lambda e: student(e, Needs()).logits,
            "onnxruntime": lambda e: run_session(session, names, e),
        }
        for name, run in runners.items():
            latency = _median_seconds(partial(run, one), repeats=repeats)
            per_batch = _median_seconds(partial(run, many), repeats=max(3, repeats // 3))
            out[name] = {
                "latency_ms": round(1000 * latency, 3),
                "throughput": round(len(big) / per_batch, 1),
                "throughput_batch": len(big),
            }
    return out
