"""Built-in method ``ft``: fine-tuning on labels, the baseline every KD method is compared with.

``loss = CE(z_s, y)`` (mean over labelled rows; optional label smoothing). No teacher is run.
"""

from __future__ import annotations

from pydantic import Field

from kdkit.api import (
    Batch,
    BuildContext,
    KDMethod,
    LossTerms,
    ModelOutput,
    Needs,
    Options,
    Requirements,
)
from kdkit.hookspecs import hookimpl
from kdkit.losses import cross_entropy


class FTOptions(Options):
    """Options of ``ft``."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the CE")


class FineTune(KDMethod):
    """Plain cross-entropy on the labels; ``requirements.teacher`` is ``None`` (no teacher)."""

    #: on the class: ``kdkit study`` reads it without building the method (no teacher axis)
    requirements = Requirements(student=Needs(), teacher=None)

    def __init__(self, options: FTOptions, context: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.requirements = Requirements(student=Needs(), teacher=None)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """``{"ce": CE(z_s, y)}``."""
        return {"ce": cross_entropy(student.logits, batch.labels, self.options.label_smoothing)}


@hookimpl
def register_kd_methods(register):
    """Register ``ft``."""
    register(
        "ft",
        FineTune,
        config=FTOptions,
        description="fine-tuning on labels only (the baseline; no teacher)",
    )
