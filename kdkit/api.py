"""The contracts every kdkit component is built against.

The core knows no concrete task, model or loss. It moves five kinds of component through one
pipeline, and this module is the whole of what they may assume about each other:

* :class:`Task` — splits of labelled code (a ``datasets.DatasetDict``), label names, metrics.
* :class:`Teacher` — a frozen model with its own tokenizer; returns a :class:`ModelOutput`.
* :class:`Student` — a trainable ``nn.Module`` with its own tokenizer; returns a :class:`ModelOutput`.
* :class:`KDMethod` — an ``nn.Module`` that declares what it needs (:class:`Requirements`),
  may own trainable modules (projections), and returns named loss terms.
* :class:`Reporter` — receives run events (start, step, evaluation, end).

Conventions that hold everywhere:

* **Layers** are numbered ``0..num_layers``: 0 is the embedding output, ``num_layers`` the last
  encoder layer. A GRU student's "layer l" is the output sequence of its l-th BiGRU layer.
* **Token tensors** are ``[B, L, H]`` with an ``attention_mask`` ``[B, L]`` (1 = real token).
* **Character offsets** ``[B, L, 2]`` give, per token, the half-open span ``[start, end)`` in
  ``Batch.texts[b]`` the token covers; special and padding tokens have ``start == end`` and
  are never aligned. For pair tasks the text of example ``b`` is
  ``text + PAIR_SEPARATOR + text_pair`` and the offsets of the second segment are shifted into it.
* **Loss terms** are already weighted; the training loss is their sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    from pathlib import Path

    import datasets

    from kdkit.data.build import BuildReport
    from kdkit.kernels.sparse_kd.topk import TopKTeacher

#: Joins the two halves of a pair example into the single text that offsets refer to.
PAIR_SEPARATOR = "\n\n"

#: One example's code: a string, or a pair of strings for pair tasks (clone detection).
Example = str | tuple[str, str]


def join_example(example: Example) -> str:
    """The single text that character offsets of ``example`` refer to.

    A pair ``(a, b)`` becomes ``a + PAIR_SEPARATOR + b``; offsets of tokens of ``b`` are shifted by
    ``len(a) + len(PAIR_SEPARATOR)``. Never split a joined text back: code contains blank lines.
    """
    return example if isinstance(example, str) else example[0] + PAIR_SEPARATOR + example[1]


#: Label value of rows that carry no label (ignored by losses and metrics).
IGNORE_INDEX = -100


class Options(BaseModel):
    """Base class of every component's options: unknown keys are errors, values are validated.

    A component declares ``class MyOptions(Options): temperature: float = 4.0`` and passes it as
    ``config=MyOptions`` to ``register``. Its fields are what a user may write under the
    component's section of a run file, next to ``name``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def max_input_tokens(self) -> int | None:
        """The most tokens per example the component these options build can take, or ``None``
        when it has no limit of its own (the default).

        A teacher or student with a fixed position table (a pre-trained encoder's
        ``max_position_embeddings``) returns its size, and ``kdkit config validate`` (and
        ``kdkit run``, before any work) refuses a ``training.max_length`` above it. It may read
        small local files (a model's ``config.json``) but must be cheap and never download.
        """
        return None


class NoOptions(Options):
    """Options of a component that takes none."""


# --------------------------------------------------------------------------------------------
# Tensors that travel between components
# --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One tokenisation of a batch of texts.

    Attributes:
        input_ids: ``[B, L]`` int64 token ids, right-padded.
        attention_mask: ``[B, L]`` int64, 1 for real tokens (special tokens included), 0 for padding.
        offsets: ``[B, L, 2]`` int64 character spans into ``Batch.texts`` (see module docstring).
        extra: model-specific inputs (e.g. ``token_type_ids``), passed through to the model.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    offsets: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Encoded:
        """Return a copy with every tensor on ``device``."""
        return Encoded(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.offsets.to(device),
            {k: v.to(device) for k, v in self.extra.items()},
        )

    @property
    def lengths(self) -> torch.Tensor:
        """``[B]`` number of real tokens per row."""
        return self.attention_mask.sum(dim=1)


@dataclass(frozen=True)
class Progress:
    """Where training stands when a batch is trained on (``Batch.progress``).

    Attributes:
        step: the number of the optimisation step this batch is for, ``1..total_steps`` — the
            same numbering as ``metrics.jsonl``, reporters and ``on_step_end``; a resumed run
            continues the count.
        total_steps: the run's planned steps (``epochs × steps per epoch``, capped by
            ``training.max_steps``); early stopping may end the run before.
        epoch: the epoch the step belongs to, ``0..epochs-1``.
    """

    step: int
    total_steps: int
    epoch: int

    @property
    def fraction(self) -> float:
        """``step / total_steps``, in ``(0, 1]``: e.g. a warm-up weight ``min(1, fraction / 0.1)``."""
        return self.step / max(self.total_steps, 1)


@dataclass
class Batch:
    """A batch as the engine hands it to models and methods.

    Attributes:
        texts: the ``B`` code strings the offsets refer to (:func:`join_example` of each example).
        labels: ``[B]`` int64 class ids (``IGNORE_INDEX`` for unlabelled rows).
        index: ``[B]`` int64 row numbers in the split; the teacher cache is keyed by them.
        student: the student's tokenisation.
        teacher: the teacher's tokenisation, or ``None`` when no teacher runs live (no teacher,
            or its outputs come from the cache).
        split: name of the split the rows come from.
        progress: during training, the :class:`Progress` of the step the batch is for (step,
            total steps, epoch); ``None`` outside the training loop (evaluation, unit tests).
    """

    texts: list[str]
    labels: torch.Tensor
    index: torch.Tensor
    student: Encoded
    teacher: Encoded | None = None
    split: str = "train"
    progress: Progress | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> Batch:
        """Return a copy with every tensor on ``device``."""
        return Batch(
            self.texts,
            self.labels.to(device),
            self.index.to(device),
            self.student.to(device),
            None if self.teacher is None else self.teacher.to(device),
            self.split,
            self.progress,
        )


@dataclass(frozen=True)
class Needs:
    """What a method asks of one model for a batch.

    Attributes:
        logits: the classification logits ``[B, C]``.
        hidden_layers: layers whose token states ``[B, L, H]`` are wanted (layer numbering in the
            module docstring).
        pooled_layers: layers whose pooled feature ``[B, H]`` is wanted (the ``<s>``/[CLS] state for
            Transformers, the concatenated final states of a GRU layer).
        embedding: the feature the classification head reads ``[B, H]`` (for RKD / contrastive).
    """

    logits: bool = True
    hidden_layers: tuple[int, ...] = ()
    pooled_layers: tuple[int, ...] = ()
    embedding: bool = False

    def union(self, other: Needs) -> Needs:
        """The smallest ``Needs`` that satisfies both."""
        return Needs(
            logits=self.logits or other.logits,
            hidden_layers=tuple(sorted(set(self.hidden_layers) | set(other.hidden_layers))),
            pooled_layers=tuple(sorted(set(self.pooled_layers) | set(other.pooled_layers))),
            embedding=self.embedding or other.embedding,
        )


@dataclass(frozen=True)
class Requirements:
    """What a KD method needs from each side. ``teacher=None`` means no teacher at all (FT)."""

    student: Needs = Needs()
    teacher: Needs | None = Needs()


@dataclass
class ModelOutput:
    """What a teacher or student returns for one batch.

    Attributes:
        logits: ``[B, C]`` float logits (always present).
        hidden_states: layer -> ``[B, L, H]`` token states, for the layers that were asked (a
            mapping to read; a teacher cache's decodes each layer when it is first read).
        pooled: layer -> ``[B, H]`` pooled features, for the layers that were asked.
        embedding: ``[B, H]`` the feature the head reads, when asked.
        attention_mask: ``[B, L]`` the mask of the tokenisation the states belong to.
        offsets: ``[B, L, 2]`` character spans of those tokens (for cross-tokenizer alignment).
        topk: only for a teacher signal read from a top-k logits cache (``cache.logits: topk``
            or an imported top-k file): the teacher's top-k log-probabilities, indices and tail
            mass (:class:`kdkit.kernels.TopKTeacher`, at the temperature they were stored at).
            ``logits`` then holds a dense reconstruction (exact when k = C; the tail spread
            evenly over the other classes when k < C). A method that can use the top-k form
            directly (``kdkit.kernels.sparse_kd_loss``) should prefer it.
    """

    logits: torch.Tensor
    hidden_states: Mapping[int, torch.Tensor] = field(default_factory=dict)
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    topk: TopKTeacher | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model that methods use to build projections and layer maps.

    Attributes:
        name: a human-readable name (``"transformer-1.5M"``, a checkpoint path, ...).
        family: ``"transformer"``, ``"gru"``, ``"roberta"``, ``"bert"``, ``"t5"``, ...
        num_layers: encoder depth (layers are ``0..num_layers``).
        hidden_size: width of token states and pooled features.
        num_parameters: exact count of parameters used at inference.
        embedding_size: width of ``ModelOutput.embedding`` (defaults to ``hidden_size``).
    """

    name: str
    family: str
    num_layers: int
    hidden_size: int
    num_parameters: int
    embedding_size: int | None = None

    @property
    def feature_size(self) -> int:
        """Width of the head's input feature."""
        return self.embedding_size or self.hidden_size


LossTerms = dict[str, torch.Tensor]
"""Named, already weighted, scalar loss terms; the engine minimises their sum."""


@dataclass
class BuildContext:
    """Everything a factory may use to build its component.

    Attributes:
        task: the resolved task (``None`` while the task itself is built).
        splits: the task's data, once loaded (students train their tokenizer on ``splits["train"]``).
        device: where the run computes.
        seed: the run seed.
        cache_dir: where caches (tokenizers, teacher outputs, datasets) live.
        run_dir: the run's output directory (``None`` outside a run).
        teacher: facts about the teacher (for methods), ``None`` when there is none.
        student: facts about the student (for methods).
        kernel_impl: the run's kernel choice (``"auto"``, ``"reference"``, ``"triton"``),
            for information. The engine alone installs it (``kdkit.kernels.set_default_impl``,
            from this field, before anything is built); components call ``kdkit.kernels``
            functions and never set the choice themselves.
        max_length: the run's ``training.max_length`` (tokens per example).
        extra: run-wide flags the engine passes (``{"progress": bool}``: show progress bars).
    """

    task: Task | None = None
    splits: datasets.DatasetDict | None = None
    device: torch.device = torch.device("cpu")
    seed: int = 0
    cache_dir: str | None = None
    run_dir: str | None = None
    teacher: ModelInfo | None = None
    student: ModelInfo | None = None
    kernel_impl: str = "auto"
    max_length: int = 512
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Task(Protocol):
    """A classification task over code.

    ``load()`` returns a ``datasets.DatasetDict`` with splits ``train``, ``validation`` and
    ``test``; every split has the columns ``text`` (str), ``label`` (int, a class id) and, for pair
    tasks, ``text_pair`` (str). Tasks map their public formats (Devign JSONL, BigCloneBench,
    CuBERT JSONL) to these columns.

    **Building offline (optional).** A task that can build its dataset from local sources also
    satisfies :class:`OfflineBuilder`: its registered factory (normally the task class) carries
    ``builder_options`` (the builder's options model) and ``build_offline(out_dir, options, *,
    quiet=False) -> BuildReport`` as class attributes. ``kdkit data build TASK`` finds them
    through the registry and generates its flags from ``builder_options``; a task without them is
    reported as having no offline builder. :class:`kdkit.data.task.CodeTask` builds through the
    same pair when a run leaves the task on its default ``source``.
    """

    name: str
    labels: Sequence[str]
    headline_metric: str
    is_pair: bool

    def load(self) -> datasets.DatasetDict:
        """Load (or build, from cache) the splits."""
        ...

    def fingerprint(self) -> str:
        """A stable hash of the data (content and options) — keys every cache built on it."""
        ...

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Metrics for ``[N, C]`` logits against ``[N]`` labels; includes ``headline_metric``."""
        ...


class OfflineBuilder(Protocol):
    """The optional offline part of the :class:`Task` contract, read from the task's registered
    factory (class attributes, so no task options are needed to build).

    Attributes:
        builder_options: the builder's options model (an :class:`Options`; derive it from
            :class:`kdkit.data.build.SourceBuildOptions` to read source trees). It is declared
            once: ``kdkit data build TASK`` makes one flag per field (name, type, default, and the
            ``Field`` description as help). Its fields may not be called ``out``, ``json`` or
            ``quiet`` (the command's own flags).
    """

    builder_options: ClassVar[type[Options]]

    @staticmethod
    def build_offline(out_dir: Path, options: Any, *, quiet: bool = False) -> BuildReport:
        """Write the dataset in the task's public format (what its reader reads) plus
        ``stats.json`` into ``out_dir``, and return the :class:`kdkit.data.build.BuildReport`.
        ``options`` is an instance of ``builder_options``; progress goes to stderr unless
        ``quiet``. A build that comes out too small raises :class:`kdkit.errors.KdkitError`."""
        ...


@runtime_checkable
class Teacher(Protocol):
    """A frozen model. Implementations keep it in ``eval()`` and run it under ``torch.no_grad()``;
    no gradient may ever reach its parameters."""

    info: ModelInfo

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        """Tokenise examples (a pair as one sentence-pair sequence) with offsets into
        :func:`join_example` of each example."""
        ...

    def __call__(self, encoded: Encoded, needs: Needs) -> ModelOutput:
        """Run the model and return what ``needs`` asks for, detached."""
        ...

    def fingerprint(self) -> str:
        """Hash of weights, tokenizer and config: keys the teacher cache."""
        ...


class Student(nn.Module):
    """A trainable model with its own tokenizer.

    Subclasses set ``info`` and implement :meth:`encode`, :meth:`forward`, :meth:`save`.
    """

    info: ModelInfo

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        """Tokenise examples with the student's own tokenizer, with offsets into
        :func:`join_example` of each example."""
        raise NotImplementedError

    def forward(self, encoded: Encoded, needs: Needs) -> ModelOutput:
        """Run the model and return what ``needs`` asks for (logits always)."""
        raise NotImplementedError

    def save(self, directory: str) -> None:
        """Save weights (safetensors), config and tokenizer so the student can be reloaded."""
        raise NotImplementedError


class KDMethod(nn.Module):
    """A distillation method. Subclass it, set ``requirements`` and implement :meth:`forward`.

    The factory registered for a method is called as ``factory(options, context)`` with a
    :class:`BuildContext` whose ``teacher`` and ``student`` describe the two models, so the method
    can build its projections (they are trained with the student and saved with the run).

    ``forward(student, teacher, batch)`` receives detached teacher outputs; it must return named,
    weighted, scalar loss terms whose sum is the training loss. Heavy maths goes through
    ``kdkit.kernels``. During training ``batch.progress`` is a :class:`Progress`
    (``step``, ``total_steps``, ``epoch``): a method that warms a term up or anneals a weight
    reads it instead of counting its own calls (it is ``None`` outside the training loop).

    State and ``--resume``: everything in the method's ``state_dict()`` — parameters *and*
    persistent buffers (``self.register_buffer(name, tensor)``) — is saved in every checkpoint
    (``checkpoints/last/method.safetensors``) and loaded back on ``kdkit run --resume``, as the
    student's weights are; the optimiser state of its parameters too. Any other state (plain
    Python values) goes through :meth:`extra_state` / :meth:`load_extra_state`. Attributes that
    are neither (``self.calls = 0``) are lost on resume. Non-persistent buffers
    (``persistent=False``) are not saved.
    """

    #: What the method needs from each side. Subclasses set it on the class when it does not
    #: depend on the models (the study reads it without building the method, see
    #: :meth:`needs_teacher`), and may refine it per instance in ``__init__`` (which layers).
    requirements: Requirements = Requirements()

    @property
    def requires_teacher(self) -> bool:
        """Whether this method needs teacher outputs at all."""
        return self.requirements.teacher is not None

    @classmethod
    def needs_teacher(cls, options: Options) -> bool:
        """Whether a method built with ``options`` needs a teacher — answered *without* building.

        Used by ``kdkit study`` to drop the teacher axis of teacher-free runs (FT). The default
        reads the class-level ``requirements``; override it when the answer depends on the
        options. It must agree with the built method's ``requirements.teacher is not None``.
        """
        return cls.requirements.teacher is not None

    def extra_state(self) -> dict[str, Any]:
        """State beyond the ``state_dict()`` to save in checkpoints (plain values and tensors).

        The default saves nothing. The returned mapping is stored in ``checkpoints/last`` (JSON +
        safetensors, never pickle) and passed to :meth:`load_extra_state` on resume.
        """
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (called on ``--resume``); default: nothing."""

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> LossTerms:
        """Named, weighted, scalar loss terms for one batch (their sum is minimised)."""
        raise NotImplementedError


class Reporter:
    """Receives run events. All methods are optional no-ops; override what you need.

    Reporters are components chosen in the run file (``reporters: [{name: console}]``); plugins
    that only want to observe every run implement the lifecycle hooks instead.
    """

    def start(self, run: RunInfo) -> None:
        """Called once before training."""

    def step(self, run: RunInfo, step: int, record: Mapping[str, float]) -> None:
        """Called after each optimisation step with the loss terms, lr and throughput."""

    def evaluation(self, run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Called after each evaluation."""

    def finish(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
        """Called once after training with the run summary."""


@dataclass
class RunInfo:
    """What reporters and lifecycle hooks learn about the run they observe."""

    run_dir: str
    config: Mapping[str, Any]
    total_steps: int = 0
    components: Mapping[str, str] = field(default_factory=dict)
    #: The step a ``--resume`` continues from (``None`` for a fresh run): a reporter that
    #: appends to a file drops its records after this step (they are computed again).
    resumed_step: int | None = None
