"""KDKIT_TRACE_HOOKS=1 shows every registration and observer hook call of a real ``kdkit run``."""

from __future__ import annotations

import re

from tests.core.tiny_cli import kdkit, run_file, tiny_env


def test_a_real_run_traces_registration_and_observer_hooks(tmp_path):
    out = kdkit(
        "run",
        str(run_file(tmp_path, "kd")),
        "--quiet",
        env=tiny_env(tmp_path, KDKIT_TRACE_HOOKS="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trace = [line for line in out.stderr.splitlines() if line.startswith("kdkit-trace: ")]
    calls = [
        m.group(1) for line in trace if (m := re.match(r"kdkit-trace: +(\w+) \[hook\]$", line))
    ]
    # each plugin's registration hooks: one call per plugin implementing it
    assert (
        calls.count("register_kd_methods") >= 9
    )  # ft kd dist pkd ckd fitnets rkd contrastive + tiny
    for hook in (
        "register_tasks",
        "register_teachers",
        "register_students",
        "register_reporters",
        "register_bench_ops",
    ):
        assert hook in calls, f"{hook} not traced"
    assert "kdkit-trace: plugin tiny-test (kdkit-tiny-test 1.0) [pluginmanage:register]" in trace
    # the observers, in run order: one on_step_end per optimisation step (32 rows / 8 = 4)
    observed = [c for c in calls if c.startswith("on_")]
    assert observed[0] == "on_run_start" and observed[-1] == "on_run_end"
    assert observed.count("on_step_end") == 4
    assert observed.count("on_eval_end") >= 1 and observed.count("on_run_end") == 1
    assert any(re.match(r"kdkit-trace: +split: validation$", line) for line in trace)
    # the arguments are traced too, on prefixed lines: the step number of each on_step_end
    steps = [
        line.split(":")[-1].strip() for line in trace if re.match(r"kdkit-trace: +step: ", line)
    ]
    assert steps[:4] == ["1", "2", "3", "4"]
