"""Two-phase validation of run files: every problem at once, located, with suggestions."""

from __future__ import annotations

import pytest

from kdkit.config import apply_overrides, parse_yaml, validate
from kdkit.errors import ConfigError

GOOD = """\
seed: 3
task:
  name: exception
teacher: code-roberta
student: transformer
method:
  name: kd
  temperature: 10
training:
  epochs: 2
"""


def _validate(text, registry, overrides=()):
    doc = parse_yaml(text, "run.yaml")
    apply_overrides(doc, overrides)
    return validate(doc, registry)


def test_valid_file_resolves_with_defaults(core_registry):
    resolved = _validate(GOOD, core_registry)
    data = resolved.as_dict()
    assert data["method"] == {"name": "kd", "temperature": 10.0, "alpha": 0.5}
    assert data["teacher"] == {"name": "code-roberta"}
    assert data["training"]["epochs"] == 2 and data["training"]["batch_size"] == 32
    assert [r["name"] for r in data["reporters"]] == ["console", "jsonl"]
    assert str(resolved.output_dir()) == "runs/exception-kd-transformer-seed3"
    # what `config show` prints validates again to the same thing
    again = _validate(resolved.to_yaml(), core_registry)
    assert again.as_dict() == data


BAD = """\
seed: 3
task:
  name: exception
student: transformer
method:
  name: kdd
training:
  epochs: two
  bach_size: 8
"""


def test_all_problems_reported_together_with_lines_and_suggestions(core_registry):
    with pytest.raises(ConfigError) as info:
        _validate(BAD, core_registry)
    err = info.value
    by_path = {p.path: p for p in err.problems}
    assert set(by_path) == {"method.name", "training.epochs", "training.bach_size"}
    assert by_path["method.name"].line == 6
    assert "did you mean 'kd'" in by_path["method.name"].message
    assert "available: dist, kd" in by_path["method.name"].suggestion
    assert by_path["training.epochs"].line == 8
    assert "'two'" in by_path["training.epochs"].message
    assert by_path["training.bach_size"].line == 9
    assert by_path["training.bach_size"].suggestion == "did you mean 'batch_size'?"
    assert by_path["training.bach_size"].message.startswith(
        "unknown option (training accepts: epochs,"
    )
    text = err.render()
    assert "run.yaml:6 method.name" in text and "run.yaml:9 training.bach_size" in text
    assert err.exit_code == 2


def test_unknown_component_option_lists_accepted_options(core_registry):
    text = GOOD.replace("temperature: 10", "temprature: 10")
    with pytest.raises(ConfigError) as info:
        _validate(text, core_registry)
    (problem,) = info.value.problems
    assert problem.path == "method.temprature" and problem.line == 8
    assert problem.message == "unknown option (kd accepts: temperature, alpha)"
    assert problem.suggestion == "did you mean 'temperature'?"


def test_component_option_type_and_range(core_registry):
    text = GOOD.replace("temperature: 10", "temperature: -1\n  alpha: high")
    with pytest.raises(ConfigError) as info:
        _validate(text, core_registry)
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["method.alpha", "method.temperature"]
    temp = next(p for p in info.value.problems if p.path == "method.temperature")
    assert "greater than 0" in temp.message and "softmax temperature" in temp.suggestion


def test_overrides_go_through_the_same_validation(core_registry):
    resolved = _validate(GOOD, core_registry, ["method.temperature=2.5", "training.lr=1e-4"])
    assert resolved.as_dict()["method"]["temperature"] == 2.5
    assert resolved.run.training.lr == pytest.approx(1e-4)
    with pytest.raises(ConfigError) as info:
        _validate(GOOD, core_registry, ["method.temprature=2"])
    (problem,) = info.value.problems
    assert problem.path == "method.temprature" and "[from --set]" in problem.message
    # a shorthand section (`student: transformer`) can still be given options by --set
    with pytest.raises(ConfigError, match="student.width: unknown option"):
        _validate(GOOD, core_registry, ["student.width=3"])


def test_missing_sections_and_unknown_top_level_key(core_registry):
    with pytest.raises(ConfigError) as info:
        _validate("sed: 1\ntask: exception\n", core_registry)
    paths = {p.path: p for p in info.value.problems}
    assert set(paths) == {"sed", "student", "method"}
    assert paths["sed"].suggestion == "did you mean 'seed'?" and paths["sed"].line == 1


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(ConfigError) as info:
        parse_yaml("task:\n  name: [unclosed\nmethod: kd\n", "x.yaml")
    (problem,) = info.value.problems
    assert problem.line == 3 and "not valid YAML" in problem.message


def test_non_mapping_file():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_yaml("- a\n- b\n", "x.yaml")


def test_yaml_tags_are_not_executed():
    # safe_load refuses python object tags: a hostile run file cannot run code
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_yaml("seed: !!python/object/apply:os.system ['echo hi']\n", "x.yaml")


def test_switching_component_by_override_starts_from_its_defaults(core_registry):
    # `method: {name: kd, temperature: 10}` then --set method.name=dist: kd's options are dropped
    resolved = _validate(GOOD, core_registry, ["method.name=dist"])
    assert resolved.as_dict()["method"] == {"name": "dist"}
    # options set after the switch apply to the new component and are validated against it
    with pytest.raises(ConfigError, match="method.temperature: unknown option"):
        _validate(GOOD, core_registry, ["method.name=dist", "method.temperature=2"])
    # setting the same name keeps the section's options
    same = _validate(GOOD, core_registry, ["method.name=kd"])
    assert same.as_dict()["method"]["temperature"] == 10.0
