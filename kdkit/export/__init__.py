"""Exporting saved models for deployment without kdkit: a Hugging Face folder, or ONNX.

* :func:`kdkit.export.hf.export_hf` — a ``save_pretrained`` folder (weights in safetensors,
  ``config.json`` with the task's real ``id2label``, the tokenizer) that
  ``AutoModelForSequenceClassification.from_pretrained`` and ``pipeline`` load;
* :func:`kdkit.export.onnx.export_onnx` — ``model.onnx`` (``torch.onnx.export``, the dynamo
  exporter, opset :data:`~kdkit.export.onnx.OPSET`, dynamic batch and sequence axes) with the
  tokenizer and the label names beside it, checked against PyTorch with ONNX Runtime.

A model kind takes part by giving its student an ``export_module()`` method: an ``nn.Module``
whose ``forward(*inputs)`` takes the tensors named by its ``input_names`` (``input_ids``,
``attention_mask``...) and returns ``[B, C]`` logits. The core names no model kind.
"""

from __future__ import annotations

from kdkit.export.hf import export_hf
from kdkit.export.onnx import OPSET, OnnxExport, export_onnx, onnx_available

__all__ = ["OPSET", "OnnxExport", "export_hf", "export_onnx", "onnx_available"]
