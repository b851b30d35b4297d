"""kdkit.distill / configure / load_model: the run file's validation, typed options, results."""

from __future__ import annotations

import pytest
import yaml

import kdkit
from kdkit.config import apply_overrides, parse_yaml, validate
from kdkit.errors import ConfigError, KdkitError
from kdkit.plugins.methods.kd import KDOptions, KDStudyOptions
from kdkit.python_api import DistillResult, Model

from .conftest import TINY


def test_the_sections_resolve_exactly_as_the_same_run_file(plugins, tmp_path):
    sections = dict(TINY, seed=3, output_dir=str(tmp_path / "r"), reporters=["jsonl"])
    from_api = kdkit.configure(plugins=plugins, **sections)
    doc = apply_overrides(parse_yaml(yaml.safe_dump(sections), "run.yaml"), [])
    from_file = validate(doc, plugins.registry)
    assert from_api.as_dict() == from_file.as_dict()
    assert from_api.as_dict()["method"] == {
        "name": "kd",
        "alpha": 0.5,
        "temperature": 2.0,
        "soft": "kl",
        "t2_scaling": True,
    }


def test_typed_options_name_their_component_and_pass_only_what_was_set(plugins):
    r = kdkit.configure(
        plugins=plugins,
        **dict(TINY, method=KDOptions(temperature=3.0), training=kdkit.TrainingConfig(epochs=1)),
    )
    assert r.components["method"].component.name == "kd"
    assert r.components["method"].options.temperature == 3.0
    assert r.components["method"].options.alpha == 0.5  # kd's default, not a re-dumped value
    assert r.run.training.epochs == 1 and r.run.training.batch_size == 32
    pair = kdkit.configure(plugins=plugins, **dict(TINY, method=("kd-study", KDStudyOptions())))
    assert pair.components["method"].component.name == "kd-study"
    as_dict = kdkit.configure(plugins=plugins, **dict(TINY, method=("kd", {"alpha": 0.9})))
    assert as_dict.components["method"].options.alpha == 0.9


def test_options_of_no_component_of_that_kind_say_how_to_name_it(plugins):
    with pytest.raises(ConfigError) as info:
        kdkit.configure(plugins=plugins, **dict(TINY, student=KDOptions()))
    (problem,) = info.value.problems
    assert problem.path == "student"
    assert "no installed student uses KDOptions" in problem.message
    assert "(NAME, options)" in problem.suggestion


def test_every_problem_is_reported_at_once_with_the_run_files_messages(plugins):
    with pytest.raises(ConfigError) as info:
        kdkit.distill(
            plugins=plugins,
            task="tiny",
            method={"name": "kd", "temprature": 2},
            training={"epochs": 0},
            bogus=1,
        )
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["bogus", "method.temprature", "student", "training.epochs"]
    text = info.value.render()
    assert "did you mean 'temperature'?" in text
    assert text.startswith("4 problems in the arguments of kdkit.distill():")
    assert isinstance(info.value, KdkitError)


def test_the_result_reads_the_summary():
    summary = {
        "run_dir": "runs/x",
        "test": {"accuracy": 0.5},
        "best_validation": {"accuracy": 0.4},
        "teacher": None,
        "headline_metric": "accuracy",
        "table": "the table",
    }
    result = DistillResult(summary, config=None)
    assert str(result.model_path) == "runs/x/best/model"
    assert result.metrics == {"accuracy": 0.5} and result.validation_metrics == {"accuracy": 0.4}
    assert result.teacher_metrics is None and result.headline == 0.5
    assert str(result) == "the table"


def test_load_model_of_a_folder_without_a_model_says_what_to_pass(tmp_path):
    with pytest.raises(KdkitError, match="no saved kdkit model"):
        kdkit.load_model(tmp_path)


def test_predict_refuses_what_is_not_code():
    model = Model(student=None, labels=["a", "b"], path=None)
    with pytest.raises(KdkitError, match="text 1 is a int"):
        model.predict(["x = 1", 3])
    assert model.label(1) == "b" and model.label(5) == "5"
