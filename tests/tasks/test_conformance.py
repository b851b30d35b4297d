"""Every registered task (``registry.names("task")``, not a hand-written list) conforms: it builds
a small dataset offline through its contract, loads it through the plugin registry with the
contract's splits and columns, its label set matches the data, ``evaluate`` gives known values on
constructed logits, and its fingerprint is stable and keyed by the options that change rows.

A new built-in task is tested here as soon as it is registered; one without an offline builder
fails with a message saying what to add.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from kdkit.api import BuildContext
from kdkit.data.build import SourceBuildOptions, offline_builder
from kdkit.discovery import load_plugins
from kdkit.testing import check_task

REGISTRY = load_plugins(distributions={"kdkit"}).registry
TASKS = REGISTRY.names("task")
#: Real standard-library modules: a small corpus every built-in builder turns into all splits.
SAMPLE = ("shutil.py", "pathlib.py", "ntpath.py", "tarfile.py", "platform.py", "inspect.py")


def test_the_registry_has_the_built_in_tasks():
    assert {"clone", "defect", "exception"} <= set(TASKS)


@pytest.fixture(scope="module", params=TASKS)
def built(request, small_build):
    """``(name, component, out_dir, report)``: the task's offline build of :data:`SAMPLE`."""
    name = request.param
    component = REGISTRY.get("task", name)
    found = offline_builder(component.factory)
    if found is None or not issubclass(found[0], SourceBuildOptions):
        pytest.fail(
            f"task {name!r} has no offline builder reading source trees: give it one "
            "(builder_options derived from SourceBuildOptions + build_offline)"
        )
    out, report = small_build(name, SAMPLE)
    return name, component, out, report


def _task(component, cache, **options):
    return component.build(component.options(options), BuildContext(cache_dir=str(cache)))


def test_splits_are_present_with_the_built_sizes(built, tmp_path):
    name, component, out, report = built
    task = _task(component, tmp_path / "cache", data_dir=str(out))
    assert task.name == name
    assert check_task(task, min_rows=1) == report.sizes
    assert (tmp_path / "cache" / "datasets" / f"{name}-{task.fingerprint()}").is_dir()


def test_label_set_matches_the_data(built, tmp_path):
    _, component, out, report = built
    task = _task(component, tmp_path / "cache", data_dir=str(out))
    data = task.load()
    for split in ("train", "validation", "test"):
        ids = Counter(data[split]["label"])
        assert set(ids) <= set(range(len(task.labels)))
        # The same label counts as the builder reported (names may differ, counts may not).
        assert sorted(ids.values()) == sorted(report.counts[split].values())
    assert len(set(data["train"]["label"])) >= 2  # something to learn
    assert len(set(task.labels)) == len(task.labels)


def test_evaluate_gives_known_values_on_constructed_logits(built, tmp_path):
    _, component, out, _ = built
    task = _task(component, tmp_path / "cache", data_dir=str(out))
    labels = torch.tensor(task.load()["test"]["label"])
    n, c = len(labels), len(task.labels)
    perfect = torch.nn.functional.one_hot(labels, c).float()
    worst = -perfect  # the true class scores lowest: never predicted, never in a top-k (k < c)
    assert set(task.evaluate(perfect, labels).values()) == {1.0}
    assert set(task.evaluate(worst, labels).values()) == {0.0}
    half = n // 2
    mixed = torch.cat([perfect[:half], worst[half:]])
    metrics = task.evaluate(mixed, labels)
    assert task.headline_metric in metrics
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    for key in ("accuracy", "top1"):
        if key in metrics:
            assert metrics[key] == pytest.approx(half / n)
    ignored = labels.clone()
    ignored[half:] = -100  # rows without a label are left out of every metric
    assert set(task.evaluate(mixed, ignored).values()) == {1.0}


def test_fingerprint_is_stable_and_follows_row_options(built, tmp_path):
    _, component, out, _ = built
    first = _task(component, tmp_path / "a", data_dir=str(out))
    second = _task(component, tmp_path / "b", data_dir=str(out))
    assert first.fingerprint() == second.fingerprint()  # across instances and cache folders
    # an even cap: defect subsamples whole (correct, buggy) pairs
    capped = _task(component, tmp_path / "a", data_dir=str(out), max_train=6)
    assert capped.fingerprint() != first.fingerprint() and len(capped.load()["train"]) == 6


def test_a_code_task_without_a_builder_on_the_default_source_says_what_to_do(tmp_path):
    from kdkit.data.metrics import binary_metrics
    from kdkit.data.task import CodeTask, CodeTaskOptions
    from kdkit.errors import KdkitError

    class NoBuilder(CodeTask):  # a third party's task that only reads its public files
        name = "nobuilder"
        headline_metric = "accuracy"
        format_name = "nobuilder JSONL"
        metrics = staticmethod(binary_metrics)

        def default_labels(self):
            return ["no", "yes"]

    task = NoBuilder(CodeTaskOptions(), BuildContext(cache_dir=str(tmp_path)))
    with pytest.raises(KdkitError, match="has no offline builder") as err:
        task.load()
    assert "task.data_dir" in err.value.fix and "nobuilder JSONL" in err.value.fix
    assert "kdkit data build" not in task.build_hint  # no command to suggest
    assert not (tmp_path / "built").exists()  # nothing was attempted
