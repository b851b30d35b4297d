"""``kdkit export --format hf``: a plain Hugging Face folder of a saved model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kdkit.errors import KdkitError
from kdkit.models import label_maps, read_model_meta


def export_hf(model_dir: str | Path, out: str | Path) -> Path:
    """Copy a saved ``transformers`` model to ``out`` with its real label names in ``config.json``.

    kdkit's ``transformers`` students and teachers already save in ``save_pretrained`` format; the
    copy makes sure ``id2label``/``label2id`` carry the task's labels (folders saved before kdkit
    wrote them say ``LABEL_0``...). A model that is not a ``transformers`` architecture (the GRU)
    is refused: ONNX is its deployment format.

    Returns:
        ``out``.
    """
    model_dir, out = Path(model_dir), Path(out)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if "model_type" not in config or not (model_dir / "model.safetensors").is_file():
        meta = read_model_meta(model_dir)
        kind = (meta.get("component") or {}).get("name", meta.get("family", "this model"))
        raise KdkitError(
            f"the model in {model_dir} ({kind}) is not a transformers model, so it has no "
            "Hugging Face folder form",
            where=str(model_dir),
            fix=f"export it as ONNX instead: kdkit export {model_dir} --format onnx",
        )
    if out.exists() and any(out.iterdir()):
        raise KdkitError(
            "the output directory is not empty",
            where=str(out),
            fix="choose a new --out directory (kdkit never overwrites)",
        )
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    labels = read_model_meta(model_dir).get("labels")
    num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels") or 0)
    maps = label_maps(labels, num_labels)
    if maps is not None:
        config["id2label"] = {str(k): v for k, v in maps["id2label"].items()}
        config["label2id"] = maps["label2id"]
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
