"""Grid files: expansion, labels, exclude/include, FT sharing, validation located in the file."""

from __future__ import annotations

import pytest

from kdkit.cli import main
from kdkit.errors import ConfigError
from kdkit.study.grid import execution_order, expand, load_grid
from kdkit.study.resolve import plan

GRID = """
name: t
output_dir: {out}
base:
  task: {{name: tiny, max_train: 32}}
  training: {{epochs: 1, batch_size: 8, max_length: 64, device: cpu}}
  reporters: [jsonl]
grid:
  teacher: [tiny-teacher]
  student: [{{name: tiny-student, size: S}}, {{name: tiny-student, size: M}}]
  method: [ft, kd, {{name: dist, label: dist-b2, beta: 2.0, training: {{lr: 1.0e-3}}}}]
  seed: [0, 1, 2]
"""


def _grid(write_grid, tmp_path, extra: str = "", body: str = GRID):
    return load_grid(write_grid(body.format(out=tmp_path / "study") + extra))


def test_expansion_counts_and_ids(write_grid, tmp_path, study_plugins):
    grid = _grid(write_grid, tmp_path)
    runs = plan(grid, study_plugins.registry)
    # 2 students x 3 methods x 3 seeds; FT needs no teacher -> teacher 'none' (still 18 runs)
    assert len(runs) == 18
    ids = [r.run_id for r in runs]
    assert ids == sorted(ids)
    assert "tiny__none__tiny-student-S__ft__seed0" in ids
    assert "tiny__tiny-teacher__tiny-student-M__dist-b2__seed2" in ids
    # each run dir is the study's runs/<id>, and the resolved config says so
    run = next(r for r in runs if r.run_id.endswith("dist-b2__seed2"))
    assert run.run_dir == tmp_path / "study" / "runs" / run.run_id
    assert run.resolved.run.output_dir == str(run.run_dir)
    assert run.resolved.run.seed == 2


def test_axis_values_reach_the_run_config(write_grid, tmp_path, study_plugins):
    runs = {r.run_id: r for r in plan(_grid(write_grid, tmp_path), study_plugins.registry)}
    dist = runs["tiny__tiny-teacher__tiny-student-M__dist-b2__seed1"].resolved
    assert dist.components["method"].options.beta == 2.0  # option from the axis value
    assert dist.run.training.lr == 1.0e-3  # the axis value's training settings
    assert dist.run.training.batch_size == 8  # ... merged into the base's training
    assert dist.components["student"].options.size == "M"
    assert dist.components["task"].options.max_train == 32  # base section kept
    ft = runs["tiny__none__tiny-student-S__ft__seed0"].resolved
    assert "teacher" not in ft.components and ft.run.training.lr == 3e-4


def test_teacherless_method_runs_once_across_teachers(write_grid, tmp_path, study_plugins):
    body = GRID.replace(
        "teacher: [tiny-teacher]", "teacher: [tiny-teacher, {{name: tiny-teacher, label: t2}}]"
    )
    runs = plan(_grid(write_grid, tmp_path, body=body), study_plugins.registry)
    # kd and dist run per teacher (2 x 2 x 2 x 3 = 24); ft once per student and seed (6)
    assert len(runs) == 30
    assert sum(r.point.labels()["method"] == "ft" for r in runs) == 6


def test_exclude_and_include(write_grid, tmp_path, study_plugins):
    extra = """
exclude:
  - {student: tiny-student-M, method: [kd, dist-b2]}
  - {seed: 2}
include:
  - {student: {name: tiny-student, size: M}, method: kd, seed: 7}
"""
    runs = plan(_grid(write_grid, tmp_path, extra), study_plugins.registry)
    ids = {r.run_id for r in runs}
    # S: 3 methods x 2 seeds = 6; M: ft x 2 seeds = 2; include: M x kd x seed 7 = 1
    assert len(ids) == 9
    assert "tiny__tiny-teacher__tiny-student-M__kd__seed7" in ids
    assert not any("seed2" in i for i in ids)
    assert not any("tiny-student-M__dist-b2" in i for i in ids)


def test_exclude_by_section_subset(write_grid, tmp_path, study_plugins):
    extra = "exclude: [{method: {name: dist, beta: 2.0}}]\n"
    runs = plan(_grid(write_grid, tmp_path, extra), study_plugins.registry)
    assert len(runs) == 12 and not any("dist" in r.run_id for r in runs)


def test_execution_order_is_seed_major(write_grid, tmp_path, study_plugins):
    grid = _grid(write_grid, tmp_path)
    runs = plan(grid, study_plugins.registry)
    order = execution_order([r.point for r in runs], grid)
    seeds = [p.values["seed"].seed for p in order]
    assert seeds == sorted(seeds) and seeds[:6] == [0] * 6
    # within a seed: grid order of students then methods
    assert [p.labels()["method"] for p in order[:3]] == ["ft", "kd", "dist-b2"]


def test_validation_reports_every_problem_with_grid_lines(write_grid, tmp_path, study_plugins):
    body = GRID.replace("beta: 2.0", "betta: 2.0").replace("size: M", "size: M, dropout: 1")
    body = body.replace("batch_size: 8", "batch_size: 0")
    path = write_grid(body.format(out=tmp_path / "s"))
    with pytest.raises(ConfigError) as info:
        plan(load_grid(path), study_plugins.registry)
    text = info.value.render()
    lines = path.read_text().splitlines()
    where = {p.path: (p.file, p.line) for p in info.value.problems}

    def line_of(word: str) -> int:
        return 1 + next(i for i, text in enumerate(lines) if word in text)

    # each problem is located on the line of the grid file where the value was written
    assert where["method.betta"] == (str(path), line_of("betta"))
    assert "did you mean 'beta'" in text
    assert where["student.dropout"][1] == line_of("dropout")
    assert where["training.batch_size"][1] == line_of("batch_size")
    # one problem per place in the file, however many runs it affects
    assert "[18 runs" in text and "[9 runs" in text and "[6 runs" in text
    assert len(info.value.problems) == 3


def test_shape_errors_are_collected(write_grid, tmp_path):
    path = write_grid("""
        grid:
          method: ft
          colour: [red]
          seed: [0, x]
          student: [{size: S}]
        exclude: [{flavour: x}]
        extras: 1
        workers: 0
    """)
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    paths = sorted(p.path for p in info.value.problems)
    assert paths == [
        "exclude.0.flavour",
        "extras",
        "grid.colour",
        "grid.method",
        "grid.seed.1",
        "grid.student.0",
        "workers",
    ]


def test_workers_default_from_the_grid(write_grid, tmp_path, monkeypatch, study_plugins):
    import kdkit.cli.study as cli_study

    assert _grid(write_grid, tmp_path).workers == 1
    path = write_grid(GRID.format(out=tmp_path / "s") + "workers: 3\n")
    assert load_grid(path).workers == 3
    seen = []
    monkeypatch.setattr(cli_study, "load_plugins", lambda: study_plugins)
    monkeypatch.setattr(cli_study, "run_workers", lambda args, out: seen.append(args.workers) or 1)
    assert main(["study", str(path)]) == 1  # the grid's 3 workers were started
    assert main(["study", str(path), "--workers", "2"]) == 1  # the flag wins
    assert seen == [3, 2]


def test_label_collision_is_an_error(write_grid, tmp_path):
    body = GRID.replace(
        "{{name: tiny-student, size: M}}", "{{name: tiny-student, size: M, label: tiny-student-S}}"
    )
    with pytest.raises(ConfigError, match="both labelled 'tiny-student-S'"):
        _grid(write_grid, tmp_path, body=body)


def test_base_from_a_file_and_its_lines(write_grid, tmp_path, study_plugins):
    write_grid(
        """
        task: {name: tiny}
        training: {epochs: 1, warmup_ratio: 2}
    """,
        name="base.yaml",
    )
    path = write_grid("""
        base: base.yaml
        grid:
          student: [{name: tiny-student}]
          method: [ft]
    """)
    with pytest.raises(ConfigError) as info:
        plan(load_grid(path), study_plugins.registry)
    (problem,) = info.value.problems
    assert problem.file == str(tmp_path / "base.yaml") and problem.line == 2
    assert problem.path == "training.warmup_ratio"


def test_method_needing_a_teacher_without_one(write_grid, tmp_path, study_plugins):
    path = write_grid(f"""
        output_dir: {tmp_path / "s"}
        base: {{task: tiny}}
        grid:
          student: [tiny-student]
          method: [ft, kd]
    """)
    with pytest.raises(ConfigError, match="method 'kd' needs a teacher"):
        plan(load_grid(path), study_plugins.registry)


def test_expand_without_registry_keeps_teachers(write_grid, tmp_path):
    grid = _grid(write_grid, tmp_path)
    # with no probe every method keeps its teacher
    assert all("__tiny-teacher__" in p.run_id for p in expand(grid))


def test_cli_dry_run_lists_runs_and_shards(
    write_grid, tmp_path, monkeypatch, capsys, study_plugins
):
    import kdkit.cli.study as cli_study

    monkeypatch.setattr(cli_study, "load_plugins", lambda: study_plugins)
    path = write_grid(GRID.format(out=tmp_path / "s"))
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("new ")]
    assert len(listed) == 18
    # 32 training rows, batch 8, 1 epoch: 4 steps and 32 examples per run
    assert all(line.split()[1:3] == ["4", "32"] for line in listed)
    assert "18 runs: 0 complete, 18 to run (72 steps)" in out
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    shards = []
    for i in (1, 2, 3):
        assert main(["study", str(path), "--dry-run", "--shard", f"{i}/3"]) == 0
        shards.append(
            {ln.split()[-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("new ")}
        )
    assert [len(s) for s in shards] == [6, 6, 6]
    assert set().union(*shards) == {ln.split()[-1] for ln in listed}


def test_cli_errors_exit_2_without_traceback(write_grid, tmp_path, capsys):
    path = write_grid("grid: {method: [ft]}\nbase: {task: tiny}\n")
    assert main(["study", str(path), "--dry-run", "--shard", "4/3"]) == 2
    err = capsys.readouterr().err
    assert "invalid shard '4/3'" in err and "Traceback" not in err
    assert main(["study", str(tmp_path / "missing.yaml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err


def test_needs_a_teacher_is_read_from_declared_requirements_without_building():
    from kdkit.api import KDMethod, NoOptions, Requirements
    from kdkit.discovery import load_plugins
    from kdkit.hookspecs import hookimpl
    from kdkit.study.grid import AxisValue
    from kdkit.study.resolve import method_needs_teacher

    built: list[str] = []

    class Unbuildable(KDMethod):
        """Declares no teacher on the class; building it on fake inputs would fail."""

        requirements = Requirements(teacher=None)

        def __init__(self, options, context):
            built.append("built")
            raise RuntimeError("needs real models")

    class OptionalTeacher(KDMethod):
        """Needs a teacher only when its option says so (its own classmethod rule)."""

        @classmethod
        def needs_teacher(cls, options):
            return options.alpha > 0

    from kdkit.plugins.methods.common import LogitOptions

    class Plugin:
        @hookimpl
        def register_kd_methods(self, register):
            register("unbuildable", Unbuildable, config=NoOptions, description="test")
            register("optional", OptionalTeacher, config=LogitOptions, description="test")
            register(
                "by-function",
                lambda o, c: Unbuildable(o, c),
                config=NoOptions,
                description="a factory that is not a class",
            )

    registry = load_plugins(distributions={"kdkit"}, extra=[("needs-test", Plugin())]).registry
    answer = method_needs_teacher(registry)

    def value(section):
        return AxisValue("method", section["name"], section)

    assert answer(value({"name": "ft"})) is False
    assert answer(value({"name": "kd"})) is True
    assert answer(value({"name": "unbuildable"})) is False
    assert answer(value({"name": "optional", "alpha": 0.0})) is False
    assert answer(value({"name": "optional", "alpha": 0.5})) is True
    # what cannot be asked keeps the teacher axis (the safe side): a plain function, a typo,
    # options that do not validate (the run's validation reports those)
    assert answer(value({"name": "by-function"})) is True
    assert answer(value({"name": "kdd"})) is True
    assert answer(value({"name": "optional", "alpha": 7})) is True
    assert built == []  # nothing was built to answer


def test_training_on_the_teacher_axis_is_the_teachers_fine_tuning_not_the_runs(
    write_grid, tmp_path, study_plugins
):
    """``training`` of a teacher value is the teacher's option (minilm's fine-tuning schedule):
    it must reach the teacher, and leave the student's run training as the base says."""
    body = GRID.replace(
        "teacher: [tiny-teacher]",
        "teacher: [{{name: minilm, label: mini, training: {{epochs: 2, lr: 1.0e-4}}}}]",
    )
    from kdkit.discovery import load_plugins

    from .conftest import BUILTINS, StudyTinyPlugin

    plugins = load_plugins(allow=[*BUILTINS, "hf-teacher"], extra=[("t", StudyTinyPlugin())])
    runs = plan(_grid(write_grid, tmp_path, body=body), plugins.registry)
    kd = next(r for r in runs if "__mini__" in r.run_id and "__kd__" in r.run_id).resolved
    teacher = kd.components["teacher"].options
    assert (teacher.training.epochs, teacher.training.lr) == (2, 1.0e-4)
    assert kd.run.training.epochs == 1 and kd.run.training.lr == 3e-4  # the base's
