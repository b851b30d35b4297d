"""A code encoder pre-trained once per machine on the local Python code (masked-LM), cached.

Shared by the built-in model plugins (not an entry point). ``code-teacher`` with a ``pretrain``
section starts from this encoder instead of random weights, then is fine-tuned on its task.

What it reads: every function (3-300 lines) of ``sources`` (default: the standard library and the
installed distributions kdkit requires), **except the held-out files** of
:mod:`kdkit.data.holdout`, from which offline builds take all their validation and test
examples. So no evaluation example's code was pre-trained on, for any task built on the machine.

How it trains: a byte-level BPE (``vocab_size``, ``__HOLE__`` added as one token) trained on those
functions; random windows of ``window`` tokens of uniformly drawn functions; RoBERTa's masking
(15 % of the tokens; 80 % ``<mask>``, 10 % random, 10 % kept); AdamW, 6 % warm-up then linear
decay to 0 at the last step, gradient clipping at 1.0; dynamic padding.

Where it lives: ``CACHE/pretrained/<key>/`` keyed by the sources (with versions), the hold-out
rule, the architecture and these options. ``work/`` holds the tokenized corpus and a checkpoint
written every ``save_every`` steps, so an interrupted pre-training resumes where it stopped (the
same command again); ``model/`` is the result, an ordinary Hugging Face folder
(``RobertaForMaskedLM`` + tokenizer + ``pretrain.json``, its record): ``kdkit pretrain --output
DIR`` copies it out. A lock file serialises two processes that need the same encoder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from kdkit.api import Options
from kdkit.data.fingerprint import hash_json
from kdkit.data.holdout import describe as describe_holdout
from kdkit.data.holdout import is_held_out
from kdkit.data.pyfuncs import extract_functions
from kdkit.data.sources import (
    SkipCounter,
    describe_sources,
    iter_source_files,
    read_module,
    resolve_sources,
)
from kdkit.data.tokenizers import SPECIAL_TOKENS, bpe_tokenizer
from kdkit.engine.checkpoint import load_state, save_state
from kdkit.engine.optim import build_schedule, clip_gradients
from kdkit.engine.persist import atomic_dir
from kdkit.errors import KdkitError
from kdkit.integrity import verify, write_manifest
from kdkit.plugins.models.hf_classifier import RobertaShape, quiet_transformers, roberta_config
from kdkit.plugins.models.mlm import mask_tokens, masked_lm_loss
from kdkit.progress import progress_bar
from kdkit.shared_work import SharedWorkBusy, may_wait

#: The masked token of the exception task: one token of the pre-trained vocabulary.
HOLE = "__HOLE__"
#: Bump when what a pre-trained folder holds (or how it is trained) changes.
PRETRAIN_VERSION = 1
#: The record written beside the weights.
RECORD = "pretrain.json"


class PretrainOptions(Options):
    """How the code encoder is pre-trained (``teacher.pretrain`` of ``code-teacher``)."""

    objective: Literal["mlm"] = Field("mlm", description="masked-language modelling (RoBERTa's)")
    sources: list[str] = Field(
        default_factory=lambda: ["stdlib", "deps"],
        description="code to pre-train on (as `kdkit data build --from`); held-out files are "
        "always left out",
    )
    steps: int = Field(1500, ge=1, le=1_000_000, description="optimizer steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    window: int = Field(128, ge=16, le=512, description="tokens per training snippet")
    max_functions: int | None = Field(
        None, ge=1, description="seeded sample of at most this many functions (default: all)"
    )
    save_every: int = Field(100, ge=1, description="checkpoint interval in steps (resume point)")
    seed: int = 0


@dataclass(frozen=True)
class EncoderShape:
    """The architecture being pre-trained (the code teacher's)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    dropout: float = 0.1


def pretrain_key(options: PretrainOptions, shape: EncoderShape) -> str:
    """The cache key: sources with their versions, hold-out rule, architecture, options."""
    roots = resolve_sources(options.sources)
    return hash_json(
        {
            "sources": describe_sources(roots),
            "holdout": describe_holdout("file"),
            "shape": shape.__dict__,
            "options": options.model_dump(mode="json", exclude={"save_every"}),
            "version": PRETRAIN_VERSION,
        }
    )


def pretrained_encoder(
    options: PretrainOptions,
    shape: EncoderShape,
    cache_root: Path,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """The folder of the pre-trained encoder (``CACHE/pretrained/<key>/model``); pre-trains it,
    or resumes an interrupted pre-training, when it is not there yet."""
    key = pretrain_key(options, shape)
    root = Path(cache_root) / "pretrained" / key
    target = root / "model"
    if (target / RECORD).is_file():
        _verify(target, key)
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "lock", log):
        if (target / RECORD).is_file():  # another process finished it while we waited
            _verify(target, key)
            return target
        work = root / "work"
        work.mkdir(exist_ok=True)
        corpus = _corpus(options, shape, work, log)
        _train(options, shape, corpus, work, target, device=device, progress=progress, log=log)
    return target


def _verify(target: Path, key: str) -> None:
    """Check the cached encoder against its manifest before it is used."""
    verify(
        target,
        artefact=f"cache entry pretrained/{key}",
        fix=f"delete it with `kdkit cache clear {key}` (pre-trained again when needed)",
    )


@contextmanager
def _locked(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """An OS-level lock (released when the process dies) around the pre-training."""
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not may_wait():  # a study worker: it runs other work meanwhile
                raise SharedWorkBusy("pre-training the code encoder", path.parent) from None
            log(f"kdkit: waiting for another process pre-training {path.parent}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class TokenCorpus:
    """Every pre-training function as token ids: ``ids`` (flat int32) cut by ``starts``."""

    ids: torch.Tensor  # [total tokens] int32
    starts: torch.Tensor  # [functions + 1] int64
    tokenizer: Any
    stats: dict[str, Any]

    def __len__(self) -> int:
        return int(self.starts.numel()) - 1


def local_functions(
    options: PretrainOptions, log: Callable[[str], None]
) -> tuple[list[str], dict[str, Any]]:
    """The texts of the pre-training functions, and what was read (files, skips, held-out)."""
    roots = resolve_sources(options.sources)
    skipped = SkipCounter()
    texts: list[str] = []
    files = held_out = 0
    for sf in iter_source_files(roots):
        files += 1
        if is_held_out(sf.group("file")):
            held_out += 1
            continue
        parsed = read_module(sf.path, skipped)
        if parsed is None:
            continue
        for fn in extract_functions(*parsed):  # texts only: no AST is kept
            if 3 <= fn.num_lines <= 300 and len(fn.text) <= 20_000:
                texts.append(fn.text)
    if options.max_functions is not None and len(texts) > options.max_functions:
        gen = torch.Generator().manual_seed(options.seed)
        keep = torch.randperm(len(texts), generator=gen)[: options.max_functions].sort().values
        texts = [texts[i] for i in keep.tolist()]
    stats = {
        "sources": describe_sources(roots),
        "files": files,
        "held_out_files": held_out,
        "functions": len(texts),
        "characters": sum(map(len, texts)),
        "skipped": dict(skipped),
    }
    log(
        f"kdkit: pre-training corpus: {len(texts):,} functions from {files - held_out:,} files "
        f"({held_out:,} held-out files left out)"
    )
    if len(texts) < 100:
        raise KdkitError(
            f"the pre-training corpus has only {len(texts)} functions",
            where="teacher.pretrain.sources",
            fix="add sources (stdlib, deps, site-packages, directories)",
        )
    return texts, stats


def _corpus(
    options: PretrainOptions, shape: EncoderShape, work: Path, log: Callable[[str], None]
) -> TokenCorpus:
    """The tokenized corpus, read from ``work/corpus`` or built there (once)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    folder = work / "corpus"
    if (folder / "corpus.json").is_file():
        verify(
            folder,
            artefact="pre-training corpus",
            fix=f"delete {folder} (it is tokenized again)",
        )
        tensors = load_file(str(folder / "ids.safetensors"))
        stats = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        tok = AutoTokenizer.from_pretrained(str(folder))
        return TokenCorpus(tensors["ids"], tensors["starts"], tok, stats)
    t0 = time.monotonic()
    texts, stats = local_functions(options, log)
    log(f"kdkit: training a {shape.vocab_size}-token BPE on {stats['characters'] / 1e6:.0f} MB")
    tok = bpe_tokenizer(texts, shape.vocab_size - 1)
    from tokenizers import AddedToken

    # the exception task's hole: one token (with the space before it), not 4 pieces
    tok.add_tokens([AddedToken(HOLE, lstrip=True, normalized=False)])
    encoded = tok(texts, add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    starts = torch.zeros(len(encoded) + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(lengths, 0)
    ids = torch.cat([torch.tensor(e, dtype=torch.int32) for e in encoded])
    stats.update(tokens=int(ids.numel()), prepare_seconds=round(time.monotonic() - t0, 1))

    def write(tmp: str) -> None:
        save_file({"ids": ids, "starts": starts}, os.path.join(tmp, "ids.safetensors"))
        tok.save_pretrained(tmp)
        Path(tmp, "corpus.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
        write_manifest(tmp, "pre-training corpus")

    atomic_dir(folder, write)
    log(f"kdkit: tokenized {ids.numel():,} tokens in {stats['prepare_seconds']:.0f} s")
    return TokenCorpus(ids, starts, tok, stats)


def _model(shape: EncoderShape, tok: Any) -> Any:
    """A randomly initialised ``RobertaForMaskedLM`` of ``shape`` (the classifier's config)."""
    from transformers import RobertaForMaskedLM

    dims = RobertaShape(shape.hidden, shape.layers, shape.heads, 4 * shape.hidden, shape.dropout)
    return RobertaForMaskedLM(roberta_config(tok, dims, 512))


def _batch(
    corpus: TokenCorpus, options: PretrainOptions, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L]`` ids and attention mask: a random window of a random function per row."""
    tok, room = corpus.tokenizer, options.window - 2
    rows = torch.randint(0, len(corpus), (options.batch_size,), generator=gen).tolist()
    pieces = []
    for r in rows:
        lo, hi = int(corpus.starts[r]), int(corpus.starts[r + 1])
        start = lo + int(torch.randint(0, max(1, hi - lo - room + 1), (1,), generator=gen))
        piece = corpus.ids[start : min(hi, start + room)].long()
        bos, eos = torch.tensor([tok.bos_token_id]), torch.tensor([tok.eos_token_id])
        pieces.append(torch.cat([bos, piece, eos]))
    width = max(len(p) for p in pieces)
    ids = torch.full((len(pieces), width), tok.pad_token_id, dtype=torch.long)
    for i, p in enumerate(pieces):
        ids[i, : len(p)] = p
    return ids, (ids != tok.pad_token_id).long()


def _train(
    options: PretrainOptions,
    shape: EncoderShape,
    corpus: TokenCorpus,
    work: Path,
    target: Path,
    *,
    device: torch.device | str,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """MLM for ``options.steps`` steps from ``work/checkpoint`` if there is one; then ``target``."""
    from safetensors.torch import load_model, save_model

    tok = corpus.tokenizer
    torch.manual_seed(options.seed)
    model = _model(shape, tok).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.01)
    schedule = build_schedule(opt, options.steps, 0.06)
    gen = torch.Generator().manual_seed(options.seed)
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    step, losses, seconds = 0, [], 0.0
    ckpt = work / "checkpoint"
    if (ckpt / "state.json").is_file():
        try:
            verify(ckpt, artefact="pre-training checkpoint", fix="", note=False)
            state = load_state(str(ckpt))
            load_model(model, str(ckpt / "model.safetensors"))
            opt.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])  # dropout: the resumed run is exact
            step, losses, seconds = state["step"], state["losses"], state["seconds"]
        except Exception as exc:  # a checkpoint we cannot read is never trusted
            raise KdkitError(
                f"the pre-training checkpoint {ckpt} cannot be read ({type(exc).__name__}: {exc})",
                where=str(ckpt),
                fix=f"delete {ckpt} to restart the pre-training from step 0 "
                "(or `kdkit cache clear pretrained`)",
            ) from None
        log(f"kdkit: resuming the pre-training at step {step}/{options.steps}")
    else:
        log(f"kdkit: pre-training the code encoder for {options.steps} steps (cached afterwards)")
    bar = progress_bar(
        total=options.steps, initial=step, desc="pretrain", unit="step", disable=not progress
    )
    started, window_loss = time.monotonic() - seconds, []
    with bar:
        while step < options.steps:
            ids, attn = _batch(corpus, options, gen)
            inputs, labels = mask_tokens(
                ids, torch.isin(ids, special), tok.mask_token_id, len(tok), gen
            )
            loss = masked_lm_loss(model, inputs.to(device), attn.to(device), labels.to(device))
            if not torch.isfinite(loss.detach()):
                raise KdkitError(
                    f"the pre-training loss became {loss.item()} at step {step}",
                    where="teacher.pretrain",
                    fix="lower teacher.pretrain.lr (the checkpoint before it is kept)",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(params, 1.0)
            opt.step()
            schedule.step()
            step += 1
            window_loss.append(loss.item())
            bar.update(1)
            if step % options.save_every == 0 or step == options.steps:
                losses.append({"step": step, "loss": round(sum(window_loss) / len(window_loss), 4)})
                window_loss = []
                bar.set_postfix(loss=losses[-1]["loss"])
                seconds = time.monotonic() - started
                state = {
                    "step": step,
                    "optimizer": opt.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "losses": losses,
                    "seconds": seconds,
                }

                def write(tmp: str, state: dict[str, Any] = state) -> None:
                    # save_model: the LM head shares the embedding table (tied weights)
                    save_model(model, os.path.join(tmp, "model.safetensors"))
                    save_state(tmp, state)
                    write_manifest(tmp, "pre-training checkpoint")

                atomic_dir(ckpt, write)
    record = {
        "objective": options.objective,
        "options": options.model_dump(mode="json"),
        "shape": shape.__dict__,
        "holdout": describe_holdout("file"),
        "corpus": corpus.stats,
        "losses": losses,
        "train_seconds": round(seconds, 1),
        "version": PRETRAIN_VERSION,
        "special_tokens": list(SPECIAL_TOKENS),
    }

    quiet_transformers()

    def export(tmp: str) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        Path(tmp, RECORD).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        write_manifest(tmp, "pretrained encoder")

    atomic_dir(target, export)
    shutil.rmtree(work, ignore_errors=True)  # corpus and checkpoint: the model folder is the result
    log(f"kdkit: pre-trained code encoder saved in {target}")


def check_holdout(task: Any) -> None:
    """Refuse a task whose evaluation splits may hold code the pre-training read.

    A kdkit offline build records the hold-out rule it obeyed (``stats.json``: ``options.holdout``);
    it must be today's rule at file level. Data not built by kdkit from local code (public
    files, a hub dataset, an in-memory dataset) carry no record and pass: their overlap with the
    local code is not checked (docs/teachers.md says so).
    """
    stats_of = getattr(task, "build_stats", None)
    stats = stats_of() if callable(stats_of) else None
    if stats is None:
        return
    rule = (stats.get("options") or {}).get("holdout")
    if rule != describe_holdout("file"):
        got = "no hold-out" if rule is None else f"hold-out {rule}"
        raise KdkitError(
            f"the {getattr(task, 'name', 'task')} data was built with {got}, so its validation "
            "and test examples may come from code the pre-trained encoder read",
            where="teacher.pretrain",
            fix="rebuild the data with the default hold-out (`kdkit data build TASK` without "
            "--no-holdout and with --split-by file; a run's own build does this), or drop "
            "teacher.pretrain",
        )


def read_record(directory: str | Path) -> dict[str, Any] | None:
    """``pretrain.json`` of a pre-trained folder, or ``None``."""
    path = Path(directory) / RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
