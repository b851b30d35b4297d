"""Bridges from other libraries' training loops to kdkit's KD methods.

* :mod:`kdkit.integrations.transformers` — :class:`DistillationTrainer`, a ``transformers.Trainer``
  whose loss is any registered kdkit KD method (docs/hf-trainer.md).
"""
