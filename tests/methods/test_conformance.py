"""Every registered KD method (built-in or installed plugin) passes kdkit.testing's conformance suite."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from kdkit.discovery import load_plugins
from kdkit.testing import check_hookimpls, check_kd_method

#: The registry as a user's ``kdkit run`` sees it: kdkit's built-ins and every installed plugin
#: (CI installs the example plugin ``logit-mse``). The tests below are parametrized over it, so
#: a new method is tested the moment it is registered.
PLUGINS = load_plugins()
NAMES = PLUGINS.registry.names("kd_method")
BUILTINS = [n for n in NAMES if PLUGINS.registry.get("kd_method", n).origin.distribution == "kdkit"]

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


def test_the_parametrization_covers_every_method_plugin():
    """Every kd_method entry point of kdkit (and the example plugin) is in the parametrization."""
    dist = metadata.distribution("kdkit")
    method_plugins = {
        ep.name
        for ep in dist.entry_points
        if ep.group == "kdkit" and ep.value.startswith("kdkit.plugins.methods.")
    }
    from_registry = {PLUGINS.registry.get("kd_method", n).origin.plugin for n in BUILTINS}
    assert from_registry == method_plugins and len(method_plugins) >= 8
    assert "logit-mse" in NAMES, (
        "the example plugin is not installed: pip install -e ./docs/examples/kdkit-logit-mse"
    )
    assert not PLUGINS.failures and not PLUGINS.registry.collisions


@pytest.mark.parametrize("name", NAMES)
def test_conformance_with_defaults(name):
    report = check_kd_method(name)
    assert report.loss == pytest.approx(sum(report.terms.values()), rel=1e-6)
    assert report.student_grad_norm > 0
    assert all(v >= 0 for k, v in report.terms.items()), report.terms  # distances and CE are >= 0


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


@pytest.mark.parametrize("name", BUILTINS)
def test_each_builtin_method_comes_from_its_own_entry_point(name):
    component = PLUGINS.registry.get("kd_method", name)
    assert component.factory.__module__ == f"kdkit.plugins.methods.{component.origin.plugin}"
    assert component.description


@pytest.mark.parametrize("name", NAMES)
def test_hookimpls_have_no_defaults(name):
    plugin = PLUGINS.pm.get_plugin(PLUGINS.registry.get("kd_method", name).origin.plugin)
    assert "register_kd_methods" in check_hookimpls(plugin)


def test_cli_lists_every_method(capsys):
    from kdkit.cli import main

    assert main(["plugins", "--json", "--kind", "kd_method"]) == 0
    out = capsys.readouterr().out
    listed = {c["name"]: c for c in json.loads(out)["components"]}
    assert set(NAMES) == {n for n, c in listed.items() if c["kind"] == "kd_method"}
    assert listed["ckd"]["options"] == sorted(
        [
            "alpha",
            "temperature",
            "soft",
            "t2_scaling",
            "layers",
            "exclude_last",
            "include_embeddings",
            "beta",
            "gamma",
            "window",
            "teacher_relations",
            "teacher_memory_mb",
        ]
    )
