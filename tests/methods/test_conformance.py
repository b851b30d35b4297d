"""Every built-in method passes kdkit.testing's conformance suite and comes from its own plugin."""

from __future__ import annotations

import importlib
import json

import pytest

from kdkit.discovery import load_plugins
from kdkit.testing import check_hookimpls, check_kd_method

#: method name -> the entry-point plugin (module under kdkit.plugins.methods) that registers it
METHODS = {
    "ft": "ft",
    "kd": "kd",
    "kd-study": "kd",
    "dist": "dist",
    "pkd": "pkd",
    "ckd": "ckd",
    "fitnets": "fitnets",
    "rkd": "rkd",
    "contrastive": "contrastive",
}

#: non-default options that exercise other code paths of the same method
VARIANTS = [
    ("kd", {"soft": "ce", "alpha": 0.0}),
    ("dist", {"ce_weight": 1.0, "temperature": 4.0}),
    ("pkd", {"project": "teacher", "layers": "last", "alpha": 0.5}),
    ("ckd", {"alpha": 0.3, "layers": [[1, 2], [2, 4]], "include_embeddings": False, "window": 2}),
    ("fitnets", {"features": "tokens", "alpha": 0.5, "exclude_last": True}),
    ("rkd", {"angle_weight": 0.0, "alpha": 0.5}),
    ("contrastive", {"queue_size": 8, "alpha": 0.5}),
]


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


@pytest.mark.parametrize("name", sorted(METHODS))
def test_conformance_with_defaults(name):
    report = check_kd_method(name)
    assert report.loss == pytest.approx(sum(report.terms.values()), rel=1e-6)
    assert report.student_grad_norm > 0


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_conformance_with_other_options(name, options):
    report = check_kd_method(name, options)
    if options.get("alpha", 1.0) < 1.0:
        assert "ce" in report.terms
    if options.get("alpha", 0.0) > 0.0:
        assert "kd" in report.terms


def test_methods_with_projections_train_them():
    for name, expected in (("pkd", 2), ("fitnets", 4), ("contrastive", 4)):
        assert check_kd_method(name).method_params_with_grad == expected, name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_comes_from_its_own_entry_point(registry, name):
    component = registry.get("kd_method", name)
    assert component.origin.plugin == METHODS[name]
    assert component.origin.distribution == "kdkit"
    assert component.factory.__module__ == f"kdkit.plugins.methods.{METHODS[name]}"
    assert component.description


@pytest.mark.parametrize("module", sorted(set(METHODS.values())))
def test_hookimpls_have_no_defaults(module):
    found = check_hookimpls(importlib.import_module(f"kdkit.plugins.methods.{module}"))
    assert found == ["register_kd_methods"]


def test_cli_lists_every_method(capsys):
    from kdkit.cli import main

    assert main(["plugins", "--json", "--kind", "kd_method"]) == 0
    out = capsys.readouterr().out
    listed = {c["name"]: c for c in json.loads(out)["components"]}
    assert set(METHODS) <= set(listed)
    assert listed["ckd"]["options"] == sorted(
        ["alpha", "temperature", "soft", "t2_scaling", "layers", "exclude_last",
         "include_embeddings", "beta", "gamma", "window"]
    )  # fmt: skip
