"""Teacher outputs computed elsewhere, imported into kdkit's cache (``kdkit cache import``).

The file format (version 1, ``docs/caching.md``) is one safetensors file:

* ``ids`` ``[N]`` int64 — the content ids (:mod:`kdkit.data.example_ids`) of the split's rows,
  in any order, each row exactly once;
* either ``logits`` ``[N, C]`` float — ``softmax(logits)`` is the teacher's distribution at
  ``temperature`` (raw logits: ``temperature`` 1);
* or ``topk_logprobs`` ``[N, k]`` float (``log p_i`` at ``temperature``, ``k <= C``),
  ``topk_indices`` ``[N, k]`` int (distinct class ids per row) and, optionally, ``tail`` ``[N]``
  float (``log`` of the remaining mass; computed as ``log(1 - sum p_i)`` when absent);
* metadata (``save_file(..., metadata={...})``, strings): ``format: kdkit-teacher-outputs``,
  ``format_version: 1``, ``model`` (the producing model's name), ``temperature``, ``split``,
  ``num_classes``.

:func:`import_outputs` validates it against the task's split and writes a cache entry
``CACHE/teacher-imports/<name>-<split>/`` laid out like a teacher-output entry (shards,
``meta.json``, integrity manifest), rows in the split's order; full logits are stored as
``temperature * logits`` (the teacher's logits up to a per-row constant), top-k entries as they
are with their temperature recorded. A run trains from it with ``cache.teacher_import: <name>``
(:func:`load_import`), exactly as from kdkit's own cache.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdkit.api import Needs
from kdkit.data.example_ids import example_ids
from kdkit.engine.distributed import Dist
from kdkit.engine.teacher_cache import _read_shards, _write_entry, open_signal
from kdkit.engine.topk_cache import LogitsFormat, size_meta
from kdkit.errors import KdkitError
from kdkit.integrity import hash_file, verify

#: The ``format`` metadata value of an import file, and the versions this kdkit reads.
FILE_FORMAT = "kdkit-teacher-outputs"
FORMAT_VERSIONS = ("1",)
#: The cache folder of imported entries (a kind of ``kdkit cache``).
KIND = "teacher-imports"
#: Metadata every file must carry.
REQUIRED_META = ("format", "format_version", "model", "temperature", "split", "num_classes")
#: How far the k + 1 bucket probabilities of a top-k row may sum from 1.
SUM_TOLERANCE = 1e-3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DOCS = "docs/caching.md"


@dataclass
class ImportRequest:
    """What to import: the file, the task (built and loaded), the split, the entry's name.

    Attributes:
        file: the safetensors file.
        task: the task (its ``load()`` gives the splits, its ``labels`` the classes).
        task_name: the task's registered name (recorded, and for messages).
        split: the split the file covers (``None``: the file's ``split`` metadata).
        name: the entry's name (``None``: from the file's ``model`` metadata).
        cache_root: the cache directory.
        replace: replace an entry of that name and split.
    """

    file: Path
    task: Any
    task_name: str
    split: str | None
    name: str | None
    cache_root: Path
    replace: bool = False


def _err(what: str, where: str, fix: str = f"see the file format in {_DOCS}") -> KdkitError:
    return KdkitError(what, where=where, fix=fix)


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of an import file (a :class:`KdkitError` when unreadable)."""
    from safetensors import safe_open

    if not path.is_file():
        raise _err(f"no such file: {path}", str(path), "give the path of the safetensors file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise _err(
            f"cannot read the file as safetensors: {type(exc).__name__}: {str(exc)[:200]}",
            str(path),
            f"write it with safetensors.torch.save_file(tensors, path, metadata=...) ({_DOCS})",
        ) from None
    return tensors, meta


def check_meta(meta: dict[str, str], where: str, num_classes: int, split: str | None) -> float:
    """Check the file's metadata; returns its temperature."""
    missing = [k for k in REQUIRED_META if not str(meta.get(k, "")).strip()]
    if missing:
        raise _err(
            f"the file's metadata has no {', '.join(map(repr, missing))}",
            f"{where} (safetensors metadata)",
            "save it with save_file(tensors, path, metadata={'format': 'kdkit-teacher-outputs', "
            "'format_version': '1', 'model': ..., 'temperature': ..., 'split': ..., "
            f"'num_classes': ...}}) ({_DOCS})",
        )
    if meta["format"] != FILE_FORMAT or meta["format_version"] not in FORMAT_VERSIONS:
        raise _err(
            f"the file's format is {meta['format']!r} version {meta['format_version']!r}; this "
            f"kdkit reads {FILE_FORMAT!r} version {', '.join(FORMAT_VERSIONS)}",
            f"{where} (metadata format, format_version)",
            f"write format={FILE_FORMAT!r}, format_version='1' ({_DOCS})",
        )
    try:
        temperature = float(meta["temperature"])
    except ValueError:
        temperature = float("nan")
    if not (math.isfinite(temperature) and temperature > 0):
        raise _err(
            f"the file's temperature must be a positive number, got {meta['temperature']!r}",
            f"{where} (metadata temperature)",
            "record the temperature the outputs were produced at (raw logits: '1')",
        )
    if split is not None and meta["split"] != split:
        raise _err(
            f"the file holds the {meta['split']!r} split, not {split!r}",
            f"{where} (metadata split)",
            f"pass --split {meta['split']}, or import the file made for {split!r}",
        )
    if meta["num_classes"] != str(num_classes):
        raise _err(
            f"the file's num_classes is {meta['num_classes']!r} but the task has "
            f"{num_classes} classes",
            f"{where} (metadata num_classes)",
            "produce the outputs with a teacher head over the task's labels (in their order: "
            "`kdkit plugins` / the task's label list), or import for the matching task",
        )
    return temperature


def _need(tensors: dict[str, torch.Tensor], name: str, where: str) -> torch.Tensor:
    if name not in tensors:
        raise _err(f"the file has no tensor {name!r}", where)
    return tensors[name]


def _check_dtype(t: torch.Tensor, name: str, floating: bool, where: str) -> None:
    ok = (
        t.is_floating_point() if floating else (not t.is_floating_point() and t.dtype != torch.bool)
    )
    if not ok:
        kind = "a float (float32, float16 or bfloat16)" if floating else "an integer"
        raise _err(f"tensor {name!r} must be {kind} tensor, got {t.dtype}", f"{where}:{name}")


def _check_finite(t: torch.Tensor, name: str, where: str, allow_neg_inf: bool = False) -> None:
    bad = torch.isnan(t) | torch.isposinf(t)
    if not allow_neg_inf:
        bad = bad | torch.isneginf(t)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise _err(
            f"tensor {name!r} has {int(bad.sum())} non-finite value(s) (first in row {row})",
            f"{where}:{name}",
            "the teacher's outputs must be finite numbers; check the producing code",
        )


def check_tensors(
    tensors: dict[str, torch.Tensor], where: str, num_classes: int, temperature: float
) -> dict[str, torch.Tensor]:
    """Check shapes, dtypes and values; returns the tensors to store (row order of the file):
    ``logits`` (``temperature * logits``, float32) or ``topk_logprobs``/``topk_indices``/``tail``."""
    ids = _need(tensors, "ids", where)
    _check_dtype(ids, "ids", False, where)
    if ids.dim() != 1:
        raise _err(f"tensor 'ids' must be [N], got shape {list(ids.shape)}", f"{where}:ids")
    n = ids.shape[0]
    has_full, has_top = "logits" in tensors, "topk_logprobs" in tensors
    if has_full == has_top:
        raise _err(
            "the file must hold either 'logits' or 'topk_logprobs' + 'topk_indices' (+ 'tail'), "
            f"{'not both' if has_full else 'and holds neither'} (tensors: {sorted(tensors)})",
            where,
        )
    if has_full:
        logits = tensors["logits"]
        _check_dtype(logits, "logits", True, where)
        if logits.shape != (n, num_classes):
            raise _err(
                f"tensor 'logits' must be [N, C] = [{n}, {num_classes}] (N ids, C classes), got "
                f"{list(logits.shape)}",
                f"{where}:logits",
            )
        logits = logits.float()
        _check_finite(logits, "logits", where)
        return {"logits": (temperature * logits).contiguous()}
    lp = tensors["topk_logprobs"]
    idx = _need(tensors, "topk_indices", where)
    _check_dtype(lp, "topk_logprobs", True, where)
    _check_dtype(idx, "topk_indices", False, where)
    if lp.dim() != 2 or lp.shape[0] != n or not 1 <= lp.shape[1] <= num_classes:
        raise _err(
            f"tensor 'topk_logprobs' must be [N, k] with N = {n} ids and 1 <= k <= C = "
            f"{num_classes}, got {list(lp.shape)}",
            f"{where}:topk_logprobs",
        )
    if idx.shape != lp.shape:
        raise _err(
            f"tensor 'topk_indices' must have the shape of 'topk_logprobs' {list(lp.shape)}, "
            f"got {list(idx.shape)}",
            f"{where}:topk_indices",
        )
    lp, idx = lp.float(), idx.long()
    _check_finite(lp, "topk_logprobs", where)
    if (lp > 1e-4).any():
        raise _err(
            "tensor 'topk_logprobs' holds values above 0: they must be log-probabilities",
            f"{where}:topk_logprobs",
            "store log_softmax(logits / T) of the top-k classes, not logits",
        )
    if ((idx < 0) | (idx >= num_classes)).any():
        raise _err(
            f"tensor 'topk_indices' holds class ids outside [0, {num_classes})",
            f"{where}:topk_indices",
        )
    if lp.shape[1] > 1 and (idx.sort(1).values.diff(dim=1) == 0).any():
        raise _err(
            "tensor 'topk_indices' repeats a class id within a row",
            f"{where}:topk_indices",
            "each row's top-k entries must be distinct classes (torch.topk gives them)",
        )
    head = torch.logsumexp(lp.double(), dim=1)  # [N] log of the top-k mass
    if "tail" in tensors:
        tail = tensors["tail"]
        _check_dtype(tail, "tail", True, where)
        if tail.shape != (n,):
            raise _err(
                f"tensor 'tail' must be [N] = [{n}], got {list(tail.shape)}", f"{where}:tail"
            )
        tail = tail.float()
        _check_finite(tail, "tail", where, allow_neg_inf=True)
        total = torch.logaddexp(head, tail.double()).exp()
        off = (total - 1).abs()
        if (off > SUM_TOLERANCE).any():
            row = int(off.argmax())
            raise _err(
                f"the top-k and tail probabilities of row {row} sum to {float(total[row]):.6f}, "
                f"not 1 (tolerance {SUM_TOLERANCE})",
                f"{where}:tail",
                "store tail = log(1 - sum(exp(topk_logprobs))) (the log of the remaining mass)",
            )
    else:
        if (head > math.log1p(SUM_TOLERANCE)).any():
            raise _err(
                "the top-k probabilities of a row sum to more than 1",
                f"{where}:topk_logprobs",
                "store log-probabilities at the file's temperature",
            )
        rest = (-head.clamp(max=0.0).exp()).log1p()  # log(1 - sum p_i); -inf when it is all
        tail = torch.where(head >= 0, torch.full_like(rest, float("-inf")), rest).float()
    if lp.shape[1] == num_classes:
        tail = torch.full_like(tail, float("-inf"))  # k = C: nothing is left over
    return {"topk_logprobs": lp, "topk_indices": idx.to(torch.int32), "tail": tail}


def align_rows(
    file_ids: torch.Tensor, split_ids: list[int], where: str, split: str
) -> torch.Tensor:
    """``[N]`` the file row of each split row (in split order); ids must cover the split exactly."""
    pos: dict[int, int] = {}
    for i, v in enumerate(file_ids.tolist()):
        if v in pos:
            raise _err(
                f"id {v} appears twice in the file (rows {pos[v]} and {i})",
                f"{where}:ids",
                "write each row of the split once",
            )
        pos[v] = i
    missing = [v for v in split_ids if v not in pos]
    extra = sorted(set(pos) - set(split_ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of the split's {len(split_ids)} rows have no output "
                f"(first ids: {missing[:3]})"
            )
        if extra:
            parts.append(f"{len(extra)} id(s) are not rows of the split (first: {extra[:3]})")
        raise _err(
            f"the file's ids do not cover the {split} split exactly: " + "; ".join(parts),
            f"{where}:ids",
            "compute ids with kdkit.data.example_ids.example_ids(task.load()[split]) over the "
            "same task data and options as the run (a run file: --config RUN.yaml), and write "
            "one output per row",
        )
    return torch.tensor([pos[v] for v in split_ids], dtype=torch.long)


def entry_dir(cache_root: Path, name: str, split: str) -> Path:
    """Where the import ``name`` of ``split`` lives in the cache."""
    return cache_root / KIND / f"{name}-{split}"


def default_name(model: str) -> str:
    """An entry name from the producing model's name (its last path part, made safe)."""
    base = model.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "teacher"
    return slug[:100]


def import_outputs(req: ImportRequest) -> dict[str, Any]:
    """Validate ``req.file`` against the task's split and write its cache entry; returns the
    entry's ``meta.json`` (plus ``path``). Every problem is a :class:`KdkitError` naming it."""
    where = str(req.file)
    tensors, meta = read_file(req.file)
    task = req.task
    splits = task.load()  # first: a task may settle its labels while loading (top-K)
    num_classes = len(task.labels)
    temperature = check_meta(meta, where, num_classes, req.split)
    split = meta["split"]
    if split not in splits:
        raise _err(
            f"the task {req.task_name!r} has no split {split!r} (it has {', '.join(splits)})",
            f"{where} (metadata split)",
            "record the split name: train, validation or test",
        )
    stored = check_tensors(tensors, where, num_classes, temperature)
    order = align_rows(tensors["ids"].long(), example_ids(splits[split]), where, split)
    stored = {k: v[order].contiguous() for k, v in stored.items()}
    name = req.name or default_name(meta["model"])
    if not _NAME.match(name):
        raise _err(
            f"the import name {name!r} is not a safe folder name",
            "--name",
            "use letters, digits, '.', '_' and '-' (at most 100)",
        )
    directory = entry_dir(req.cache_root, name, split)
    if directory.exists():
        if not req.replace:
            raise _err(
                f"an import named {name!r} of the {split} split exists",
                str(directory),
                f"choose another --name, pass --replace, or `kdkit cache clear {directory.name}`",
            )
        shutil.rmtree(directory)
    topk = "topk_indices" in stored
    fmt = LogitsFormat("topk", int(stored["topk_indices"].shape[1]), temperature) if topk else None
    entry_meta: dict[str, Any] = {
        "kind": "imported",
        "format_version": 1,
        "name": name,
        "teacher": f"imported:{meta['model']}",
        "source_model": meta["model"],
        "source_file": str(req.file.resolve()),
        "source_sha256": hash_file(req.file),
        "task": req.task_name,
        "data_fingerprint": task.fingerprint(),
        "split": split,
        "rows": len(order),
        "num_classes": num_classes,
        "temperature": temperature,
        "logits_format": fmt.key_json() if fmt else None,
        "created": time.time(),
        **size_meta(stored, num_classes),
    }
    if fmt:
        entry_meta["k_stored"] = fmt.k
    _write_entry(directory, stored, entry_meta, Dist())
    return {
        **json.loads((directory / "meta.json").read_text(encoding="utf-8")),
        "path": str(directory),
    }


def load_import(
    name: str,
    split: str,
    cache_root: Path,
    task: Any,
    num_rows: int,
    needs: Needs,
    device: torch.device,
) -> Any:
    """The teacher signal of the import ``name`` for ``split`` (``cache.teacher_import``),
    checked against its manifest, the run's data and the method's needs."""
    if needs.hidden_layers or needs.pooled_layers or needs.embedding:
        raise KdkitError(
            "imported teacher outputs hold logits only, and this method needs teacher features "
            f"(hidden layers {list(needs.hidden_layers)}, pooled {list(needs.pooled_layers)}, "
            f"embedding {needs.embedding})",
            where="cache.teacher_import",
            fix="use a logit-based method (kd, kd-study, dist, or a method with alpha > 0 and no "
            "feature term), or a teacher section instead of cache.teacher_import",
        )
    directory = entry_dir(cache_root, name, split)
    fix = (
        f"import the file with `kdkit cache import FILE --config RUN.yaml --name {name}` "
        "(`kdkit cache ls` lists the imports)"
    )
    if not (directory / "meta.json").is_file():
        raise KdkitError(
            f"no imported teacher outputs named {name!r} for the {split} split",
            where=str(directory),
            fix=fix,
        )
    verify(
        directory,
        artefact=f"imported teacher outputs {directory.name}",
        fix=f"import the file again with --replace, or `kdkit cache clear {directory.name}`",
    )
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    data_fp = task.fingerprint()
    if meta.get("data_fingerprint") != data_fp or meta.get("rows") != num_rows:
        raise KdkitError(
            f"the imported teacher outputs {name!r} were made for other data: "
            f"{meta.get('rows')} rows with data fingerprint {meta.get('data_fingerprint')}, this "
            f"run's {split} split has {num_rows} rows with fingerprint {data_fp}",
            where=str(directory),
            fix="import the file for this run's task options: `kdkit cache import FILE "
            f"--config RUN.yaml --name {name} --replace`",
        )
    tensors = _read_shards(directory, meta)
    return open_signal(tensors, needs, device, directory, meta)


def imported_teacher_summary(
    name: str, cache_root: Path, task: Any, test_labels: torch.Tensor
) -> dict[str, Any]:
    """The run summary's ``teacher`` of a run trained from the import ``name``: the producing
    model, and its test metrics when the test split was imported too (``{}`` otherwise)."""
    meta = json.loads((entry_dir(cache_root, name, "train") / "meta.json").read_text("utf-8"))
    out: dict[str, Any] = {
        "name": meta.get("teacher"),
        "parameters": None,
        "fingerprint": None,
        "imported": {
            "name": name,
            "source_model": meta.get("source_model"),
            "temperature": meta.get("temperature"),
            "logits_format": meta.get("logits_format"),
            "source_sha256": meta.get("source_sha256"),
        },
        "test": {},
    }
    if (entry_dir(cache_root, name, "test") / "meta.json").is_file():
        signal = load_import(
            name, "test", cache_root, task, len(test_labels), Needs(), torch.device("cpu")
        )
        out["test"] = task.evaluate(signal.logits.cpu(), test_labels)
    return out
