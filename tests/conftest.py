"""Test-session environment: offline, isolated caches, Triton kernels on the CPU interpreter."""

from __future__ import annotations

import os
import tempfile

# Must be set before triton decorates any kernel: the tests run Triton code on CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Never try a model or dataset hub from tests (there is no network; a hub call would hang).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The wandb reporter (when wandb is installed) writes offline runs; never a login prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Caches of this test session go to a private folder, never the user's ~/.cache/kdkit.
os.environ.setdefault("KDKIT_CACHE", tempfile.mkdtemp(prefix="kdkit-test-cache-"))
# Tests load only what they ask for; a user's KDKIT_PLUGINS must not change results.
os.environ.pop("KDKIT_PLUGINS", None)
os.environ.pop("KDKIT_DISABLE_PLUGINS", None)
