"""The default job (``kdkit run`` with no arguments): teacher -> FT student -> KD student.

From the embedded default run file (a KD run; ``--set method.name=X`` makes it an X run) it

1. builds the task's data (offline: exception classification from the standard library),
2. trains the code teacher, or reuses it from the cache,
3. trains an FT baseline and the KD (or X) student, the same architecture and size, same seed,
4. measures teacher and student inference (batch-1 latency, batched throughput) in-process,
5. prints and saves the comparison: headline metric, parameters, % of the teacher kept, speed-up.

Model selection uses validation only; the test split is read once per model at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from kdkit.api import Example, Needs, Student, Teacher
from kdkit.baselines import Baselines
from kdkit.baselines.runs import flags, from_summary
from kdkit.config import ResolvedConfig, apply_overrides, parse_yaml, validate
from kdkit.discovery import Plugins
from kdkit.engine.batching import split_examples
from kdkit.engine.persist import load_student
from kdkit.engine.runner import build_components, resolve_device, run_once
from kdkit.engine.summary import comparison_table, write_json
from kdkit.errors import KdkitError


def _variant(
    resolved: ResolvedConfig,
    plugins: Plugins,
    root: Path,
    name: str,
    method: dict[str, Any] | None = None,
) -> ResolvedConfig:
    """The default run with its output_dir under ``root/name`` (and another method)."""
    data = resolved.as_dict()
    data["output_dir"] = str(root / name)
    if method is not None:
        data["method"] = method
    doc = parse_yaml(yaml.safe_dump(data, sort_keys=False), f"<default job: {name}>")
    return validate(apply_overrides(doc, []), plugins.registry)


def new_root(base: str | Path) -> Path:
    """A fresh directory for this job's runs (``base``, or ``base-2``, ``base-3``...)."""
    base = Path(base)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    candidate.mkdir(parents=True)
    return candidate


@torch.no_grad()
def measure_inference(
    model: Student | Teacher,
    examples: list[Example],
    max_length: int,
    *,
    latency_rows: int = 32,
    batch_size: int = 64,
    throughput_rows: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median batch-1 latency (ms) and batched throughput (examples/s) of the forward pass.

    Throughput is timed over ``throughput_rows`` examples spread evenly over the length-sorted
    examples (all of them when there are fewer), so the lengths are those of the whole split at
    a fraction of the time: the teacher's pass over the 699 default test rows took ~15 s of the
    default job.

    Timed with :class:`torch.utils.benchmark.Timer` (what ``kdkit bench`` uses on CPU): it waits
    for the GPU around each timing, so CUDA's asynchronous launches are not mistaken for the
    forward pass, and it runs with the threads torch is set to use (the Timer's default is one).
    Tokenisation is done beforehand and not timed: it is the same cost for any model size.
    """
    from torch.utils import benchmark

    call = model if callable(model) else model.forward
    if hasattr(model, "eval"):
        model.eval()
    threads = torch.get_num_threads()

    def seconds(fn: Any) -> float:
        """Seconds of one call of ``fn``, after the Timer's two warm-up calls (this function's
        ``no_grad`` holds inside: the Timer runs ``fn`` synchronously on this thread)."""
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
        return timer.timeit(1).median

    singles = [model.encode([e], max_length).to(device) for e in examples[:latency_rows]]
    # one timing per row (rows differ in length): the median is a typical single request
    times = [seconds(lambda enc=enc: call(enc, Needs())) for enc in singles]
    ordered = sorted(examples, key=len)  # batches of similar length, as a server would form
    if len(ordered) > throughput_rows:
        step = (len(ordered) - 1) / (throughput_rows - 1)
        ordered = [ordered[round(i * step)] for i in range(throughput_rows)]
    batches = [
        model.encode(ordered[i : i + batch_size], max_length).to(device)
        for i in range(0, len(ordered), batch_size)
    ]
    total = seconds(lambda: [call(enc, Needs()) for enc in batches])
    return {"latency_ms": 1000 * statistics.median(times), "throughput": len(ordered) / total}


def verdict_line(method: str, gain: float, head: str) -> str:
    """The comparison in plain words: ``"KD is 7.0 points above FT on test top1"``.

    ``gain`` is the method's test score minus FT's (fractions, as metrics are); rounded to the
    0.1 point shown, a gap of 0.0 reads as a tie.
    """
    points = round(100 * gain, 1)
    if points == 0:
        return f"{method} ties FT on test {head} (0.0 points apart)"
    side = "above" if points > 0 else "below"
    return f"{method} is {abs(points):.1f} points {side} FT on test {head}"


def baseline_table_rows(
    baselines: Baselines | None, head: str, teacher_score: float
) -> list[dict[str, Any]]:
    """The comparison table's baseline rows (test split, same metric): majority class,
    stratified random, the lexical baselines; ``kept`` is their score as % of the teacher's."""
    if baselines is None or "test" not in baselines.splits:
        return []
    return [
        {
            "model": f"baseline: {name}",
            head: score,
            "ci": list(ci),
            "kept": 100 * score / teacher_score if teacher_score else None,
        }
        for name, score, ci in baselines.table("test")
    ]


def baselines_note(entry: Any) -> str | None:
    """The one-line note of a summary's ``baselines`` value when they are unavailable."""
    if isinstance(entry, dict) and entry.get("unavailable"):
        return str(entry["unavailable"])
    return None


def run_default_job(
    resolved: ResolvedConfig, plugins: Plugins, *, output: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the default job and return the comparison (also in ``ROOT/comparison.json``).

    The run file's method (``kd``, or whatever ``--set method.name=X`` chose) is trained beside
    an FT baseline of the same student; its run is ``ROOT/X`` and its row "X student". ``ROOT``
    is ``output`` (a fresh ``-2``, ``-3``... beside it when it exists), by default
    ``runs/default``.
    """
    method = resolved.components["method"].component.name
    if method == "ft":
        raise KdkitError(
            "the default job compares FT with a distillation method; method.name=ft "
            "leaves nothing to compare",
            where="--set method.name",
            fix="choose a KD method (see `kdkit plugins`), or run FT alone with "
            "`kdkit run FILE` and method: ft in FILE",
        )
    label = method.upper()
    t_start = time.perf_counter()
    root = new_root(output or "runs/default")
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    say(f"kdkit: default job -> {root}")
    ft_cfg = _variant(resolved, plugins, root, "ft", {"name": "ft"})
    kd_cfg = _variant(resolved, plugins, root, method)
    say("kdkit: [1/3] FT baseline (the teacher is trained first if it is not cached)")
    ft = run_once(ft_cfg, plugins, progress=progress)
    say(f"kdkit: [2/3] {label} student")
    kd = run_once(kd_cfg, plugins, progress=progress)
    say(
        "kdkit: [3/3] inference speed (teacher vs student, this process, CPU threads: "
        f"{torch.get_num_threads()})"
    )
    device = resolve_device(resolved.run.training.device)
    comps = build_components(kd_cfg, device, root / method)  # cached: task, tokenizer, teacher
    if comps.teacher is None:
        raise KdkitError(
            f"method '{method}' ran without a teacher: the default job needs one to "
            "compare against",
            where="teacher",
            fix="keep the default run's teacher section",
        )
    examples = split_examples(comps.splits["test"], comps.task.is_pair)
    max_len = resolved.run.training.max_length
    t_speed = measure_inference(comps.teacher, examples, max_len, device=device)
    student = load_student(root / method, plugins.registry).to(device)
    s_speed = measure_inference(student, examples, max_len, device=device)
    head = kd["headline_metric"]
    teacher_score = kd["teacher"]["test"][head]
    rows = [
        {
            "model": f"teacher ({kd['teacher']['name']})",
            "parameters": kd["teacher"]["parameters"],
            head: teacher_score,
            "kept": 100.0,
            **t_speed,
            "speedup": 1.0,
        },
        {
            "model": f"FT student ({ft['student']['name']})",
            "parameters": ft["student"]["parameters"],
            head: ft["test"][head],
            "kept": 100 * ft["test"][head] / teacher_score,
            **s_speed,
            "speedup": t_speed["latency_ms"] / s_speed["latency_ms"],
        },
        {
            "model": f"{label} student ({kd['student']['name']})",
            "parameters": kd["student"]["parameters"],
            head: kd["test"][head],
            "kept": 100 * kd["test"][head] / teacher_score,
            **s_speed,
            "speedup": t_speed["latency_ms"] / s_speed["latency_ms"],
        },
    ]
    baselines = from_summary(kd.get("baselines")) or from_summary(ft.get("baselines"))
    rows += baseline_table_rows(baselines, head, teacher_score)
    table = comparison_table(rows, head)
    gain = kd["test"][head] - ft["test"][head]
    verdict = (
        f"{verdict_line(label, gain, head)}; the student is {rows[2]['speedup']:.1f}x "
        f"faster at batch 1 and {s_speed['throughput'] / t_speed['throughput']:.1f}x in "
        f"throughput, with {100 * rows[2]['parameters'] / rows[0]['parameters']:.1f} % "
        "of the teacher's parameters."
    )
    warnings = flags(
        baselines,
        teacher_score,
        {"FT student": ft["test"][head], f"{label} student": kd["test"][head]},
    )
    note = baselines_note(kd.get("baselines"))
    if note:
        warnings.append(note)
    result = {
        "rows": rows,
        "headline_metric": head,
        "method": method,
        "kd_minus_ft": gain,
        "verdict": verdict,
        "flags": warnings,
        "seconds": time.perf_counter() - t_start,
        "baselines": kd.get("baselines"),
        "baselines_seconds": {
            "ft": (ft.get("baselines") or {}).get("lookup_seconds"),
            method: (kd.get("baselines") or {}).get("lookup_seconds"),
        },
        "runs": {"ft": ft["run_dir"], method: kd["run_dir"]},
        "threads": torch.get_num_threads(),
    }
    write_json(root / "comparison.json", result)
    text = "\n".join([table, "", verdict, *warnings])
    (root / "comparison.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"({result['seconds']:.0f} s; runs in {root})")
    return result
