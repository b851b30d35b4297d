"""kdkit.distill(dataset=...): an in-memory DatasetDict trains through the ordinary run path."""

from __future__ import annotations

import datasets

import kdkit
from tests.tasks.test_datasets_inputs import SPLIT_OF, user_rows


def test_distill_trains_on_an_in_memory_dataset_dict(plugins, tmp_path):
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(user_rows(s)) for s in SPLIT_OF})
    result = kdkit.distill(
        task={"name": "defect", "columns": {"code": "func", "y": "target"}},
        dataset=dd,
        student={"name": "gru", "size": "0.6M", "vocab_size": 300, "hidden_size": 16},
        method="ft",
        training={
            "epochs": 1,
            "batch_size": 8,
            "max_length": 64,
            "device": "cpu",
            "baselines": False,
        },
        output_dir=str(tmp_path / "run"),
        cache={"dir": str(tmp_path / "cache")},
        progress=False,
        plugins=plugins,
    )
    # the rows it trained and tested on are the in-memory ones: 16 train rows -> 2 steps of 8,
    # and the test metrics cover the 7 test rows (accuracy is a multiple of 1/7)
    assert result.summary["steps"] == 2
    assert round(result.metrics["accuracy"] * 7, 6) == round(result.metrics["accuracy"] * 7)
    assert (result.model_path / "kdkit.json").is_file()
