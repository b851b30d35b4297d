"""Teacher outputs computed outside kdkit, imported, and a KD student trained from them.

    python docs/examples/import_teacher_outputs.py --config RUN.yaml --model-dir DIR \\
        --work WORKDIR [--topk K] [--temperature T] [--make-tiny-model] [--cache CACHE]

Three steps, each a function you can lift into your own code:

1. :func:`export_split` (kdkit side): the rows of the task's train split with their content ids
   (``kdkit.data.example_ids``), as JSON lines ``{"id", "text"[, "text_pair"]}``. This is all the
   teacher side needs to know about kdkit.
2. :func:`write_teacher_file` (teacher side, plain ``transformers`` + ``safetensors``, no kdkit):
   a local Hugging Face sequence-classification model runs over those rows and writes the import
   file — ``ids`` and either ``logits`` ``[N, C]`` or its top-k log-probabilities
   (``topk_logprobs``, ``topk_indices``, ``tail``) at ``--temperature`` — with the metadata
   ``kdkit cache import`` checks (``docs/caching.md``).
3. :func:`import_and_train`: ``kdkit cache import FILE --config RUN.yaml --name NAME`` and
   ``kdkit run RUN.yaml --set cache.teacher_import=NAME`` (the run file needs no teacher section).

``--make-tiny-model`` first saves a tiny randomly initialised RoBERTa classifier (with a word-level
tokenizer trained on the split) into ``--model-dir``: the test of this example uses it, so nothing
comes from a hub. With a real model, point ``--model-dir`` at its ``save_pretrained`` folder; its
head must score the task's labels in the task's order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def export_split(config: str, split: str, out: Path, cache: str | None = None) -> int:
    """Write the ``split`` rows of the run file's task as JSON lines with their content ids;
    returns the number of classes (the length of the task's label list)."""
    from kdkit.api import BuildContext
    from kdkit.config import load_config
    from kdkit.data.example_ids import example_ids
    from kdkit.discovery import load_plugins

    resolved = load_config(config, load_plugins().registry)
    section = resolved.components["task"]
    cache_dir = cache or resolved.run.cache.dir
    task = section.component.build(section.options, BuildContext(cache_dir=cache_dir))
    rows = task.load()[split]
    pairs = rows["text_pair"] if "text_pair" in rows.column_names else None
    with out.open("w", encoding="utf-8") as fh:
        for i, (row_id, text) in enumerate(zip(example_ids(rows), rows["text"], strict=True)):
            obj = {"id": row_id, "text": text}
            if pairs is not None:
                obj["text_pair"] = pairs[i]
            fh.write(json.dumps(obj) + "\n")
    return len(task.labels)


def make_tiny_model(model_dir: Path, rows_jsonl: Path, num_labels: int) -> None:
    """Save a tiny random RoBERTa classifier and a word-level tokenizer into ``model_dir``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    texts = [json.loads(line)["text"] for line in rows_jsonl.read_text().splitlines()]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts, trainers.WordLevelTrainer(vocab_size=500, special_tokens=specials)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(model_dir)
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=fast.pad_token_id,
        num_labels=num_labels,
    )
    RobertaForSequenceClassification(config).save_pretrained(model_dir)


def write_teacher_file(
    model_dir: Path,
    rows_jsonl: Path,
    out: Path,
    *,
    split: str = "train",
    topk: int = 0,
    temperature: float = 1.0,
    max_length: int = 128,
    batch_size: int = 16,
) -> None:
    """Run the local HF classifier over the rows and write the import file (no kdkit here)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = [json.loads(line) for line in rows_jsonl.read_text().splitlines()]
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            texts = [r["text"] for r in chunk]
            pairs = [r["text_pair"] for r in chunk] if "text_pair" in chunk[0] else None
            enc = tokenizer(
                texts,
                pairs,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            enc.pop("token_type_ids", None)  # RoBERTa has a single segment type
            parts.append(model(**enc).logits.float())
    logits = torch.cat(parts)  # [N, C] raw logits
    tensors = {"ids": torch.tensor([r["id"] for r in rows], dtype=torch.int64)}
    if topk:
        log_p = torch.log_softmax(logits / temperature, dim=-1)  # at the recorded temperature
        values, indices = log_p.topk(min(topk, logits.shape[1]), dim=-1)
        rest = log_p.scatter(1, indices, float("-inf"))  # the other classes
        tensors.update(
            topk_logprobs=values.contiguous(),
            topk_indices=indices.to(torch.int32).contiguous(),
            tail=torch.logsumexp(rest, dim=-1),  # log of the remaining mass (-inf: none)
        )
    else:
        tensors["logits"] = (logits / temperature).contiguous()  # softmax(.) is p at T
    metadata = {
        "format": "kdkit-teacher-outputs",
        "format_version": "1",
        "model": str(getattr(model.config, "name_or_path", "") or model_dir),
        "temperature": repr(float(temperature)),
        "split": split,
        "num_classes": str(logits.shape[1]),
    }
    save_file(tensors, str(out), metadata=metadata)


def kdkit(*args: str, env: dict[str, str]) -> None:
    """Run a ``kdkit`` command with this interpreter (the command line a user would type)."""
    cmd = [sys.executable, "-m", "kdkit", *args]
    print("$ kdkit " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env=env)


def import_and_train(
    config: str, file: Path, name: str, run_dir: Path, env: dict[str, str]
) -> None:
    """``kdkit cache import`` the file, then train the run file's student from it."""
    kdkit("cache", "import", str(file), "--config", config, "--name", name, "--replace", env=env)
    kdkit(
        "run",
        config,
        "--set",
        f"cache.teacher_import={name}",
        "--set",
        f"output_dir={run_dir}",
        env=env,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="kdkit run file (task, student, method)")
    ap.add_argument("--model-dir", required=True, type=Path, help="local HF classifier folder")
    ap.add_argument("--work", required=True, type=Path, help="folder for the files written")
    ap.add_argument("--topk", type=int, default=0, help="store top-k log-probs (0: full logits)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--name", default="my-teacher", help="the import's name")
    ap.add_argument("--cache", help="kdkit cache directory (default: the run file's)")
    ap.add_argument("--make-tiny-model", action="store_true", help="save a tiny random RoBERTa")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.cache:
        env["KDKIT_CACHE"] = args.cache
    rows = args.work / "train-rows.jsonl"
    num_labels = export_split(args.config, "train", rows, args.cache)
    if args.make_tiny_model:
        make_tiny_model(args.model_dir, rows, num_labels)
    out = args.work / "teacher-train.safetensors"
    write_teacher_file(args.model_dir, rows, out, topk=args.topk, temperature=args.temperature)
    print(f"wrote {out}", flush=True)
    import_and_train(args.config, out, args.name, args.work / "run", env)


if __name__ == "__main__":
    main()
