"""The three built-in tasks, built through the plugin registry, pass kdkit.testing.check_task."""

from __future__ import annotations

import pytest

from kdkit.api import BuildContext
from kdkit.discovery import load_plugins
from kdkit.testing import check_task

CASES = {
    "exception": ("cubert", {"train": 6, "validation": 3, "test": 3}),
    "defect": ("devign", {"train": 5, "validation": 2, "test": 3}),
    "clone": ("bigclonebench", {"train": 8, "validation": 3, "test": 2}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_task_conforms(name, fixtures, tmp_path):
    component = load_plugins().registry.get("task", name)
    folder, sizes = CASES[name]
    options = component.config(data_dir=str(fixtures / folder))
    task = component.factory(options, BuildContext(cache_dir=str(tmp_path / "c")))
    assert check_task(task) == sizes
    assert (tmp_path / "c" / "datasets").is_dir()  # the context's cache dir is honoured
