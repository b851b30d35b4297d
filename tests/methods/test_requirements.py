"""Every registered method's declared teacher need (read without building it) is the built one's."""

from __future__ import annotations

import pytest

from kdkit.api import KDMethod
from kdkit.discovery import load_plugins

from .helpers import context, info

REGISTRY = load_plugins(distributions={"kdkit"}).registry


@pytest.mark.parametrize("name", REGISTRY.names("kd_method"))
def test_needs_teacher_without_building_agrees_with_the_built_method(name):
    comp = REGISTRY.get("kd_method", name)
    assert isinstance(comp.factory, type) and issubclass(comp.factory, KDMethod)
    options = comp.options({})
    declared = comp.factory.needs_teacher(options)
    built = comp.build(options, context(student=info(2, 8), teacher=info(4, 16)))
    assert declared == built.requires_teacher
    assert declared == (name != "ft")  # of kdkit's own methods only FT trains without a teacher
