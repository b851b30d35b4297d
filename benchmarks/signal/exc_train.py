"""One exception-classification experiment: data variant, tokenizer, window, model, optimiser.

python exc_train.py --name NAME [options]   -> /work/scratch/signal/results/NAME.json
Every option is one lever of issue 18; defaults are the best setup found.
"""

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

#: Where data/, tok/, results/ and cache/ live (outside the repository).
SCRATCH = Path(os.environ.get("SIGNAL_SCRATCH", "/work/scratch/signal"))
CUBERT = [
    "ValueError",
    "KeyError",
    "AttributeError",
    "TypeError",
    "OSError",
    "IOError",
    "ImportError",
    "IndexError",
    "DoesNotExist",
    "KeyboardInterrupt",
    "StopIteration",
    "AssertionError",
    "SystemExit",
    "RuntimeError",
    "HTTPError",
    "UnicodeDecodeError",
    "NotImplementedError",
    "ValidationError",
    "ObjectDoesNotExist",
    "NameError",
]
HOLE = "__HOLE__"


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--data", default="all", help="data folder under data/ (all, stdlib)")
    p.add_argument("--stdlib-only", action="store_true", help="keep only stdlib rows")
    p.add_argument("--labels", default="cubert", help="cubert | top-K")
    p.add_argument("--window", default="tok", help="tok (128 tokens, 3/4 before) | lines5 | func")
    p.add_argument("--before", type=float, default=0.75)
    p.add_argument("--bpe", default="corpus", help="corpus | train (BPE trained on train texts)")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--schedule", default="linear", help="linear | constant")
    p.add_argument("--clip", type=float, default=1.0, help="0 = no clipping")
    p.add_argument("--pad", default="dynamic", help="dynamic | max")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--max-train", type=int, default=0, help="cap train rows (0 = all)")
    p.add_argument("--init", default="", help="pre-trained encoder folder (MLM)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--baselines-only", action="store_true", help="write results/NAME.base.json and stop"
    )
    return p.parse_args()


def load_rows(a):
    rows = [json.loads(line) for line in open(SCRATCH / "data" / a.data / "handlers.jsonl")]
    if a.stdlib_only:
        rows = [r for r in rows if r["src"] == "stdlib"]
    if a.labels == "cubert":
        labels = CUBERT
    else:
        k = int(a.labels.split("-")[1])
        c = Counter(r["label"] for r in rows if r["split"] == "train")
        labels = [x for x, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    ids = {x: i for i, x in enumerate(labels)}
    rows = [r for r in rows if r["label"] in ids]
    # labels no train row shows cannot be learnt: drop them everywhere (recorded)
    train_labels = {r["label"] for r in rows if r["split"] == "train"}
    labels = [x for x in labels if x in train_labels]
    ids = {x: i for i, x in enumerate(labels)}
    rows = [dict(r, y=ids[r["label"]]) for r in rows if r["label"] in ids]
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    if a.max_train:
        random.Random(0).shuffle(splits["train"])
        splits["train"] = splits["train"][: a.max_train]
    return splits, labels


def tokenizer(a, splits):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    key = f"bpe-{a.data}-{a.bpe}-{a.vocab}" + ("-std" if a.stdlib_only and a.bpe == "train" else "")
    d = SCRATCH / "tok" / key
    if not (d / "tokenizer.json").is_file():
        t0 = time.time()
        tok = ByteLevelBPETokenizer(trim_offsets=True)
        if a.bpe == "corpus":
            it = (json.loads(line) for line in open(SCRATCH / "data" / a.data / "functions.txt"))
        else:
            it = (r["text"] for r in splits["train"])
        tok.train_from_iterator(
            it,
            vocab_size=a.vocab,
            min_frequency=2,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", HOLE],
        )
        tok.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
        d.mkdir(parents=True, exist_ok=True)
        tok.save(str(d / "tokenizer.json"))
        print(f"bpe {key} trained in {time.time() - t0:.1f}s", flush=True)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(d / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def window_text(a, tok, r):
    """The text the models see (a substring of the masked function)."""
    text = r["text"]
    if a.window == "func":
        return text
    if a.window.startswith("lines"):
        n = int(a.window[5:])
        lines = text.splitlines(keepends=True)
        return "".join(lines[max(0, r["line"] - n) : r["line"] + n + 1])
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    hole = next(i for i, (s, e) in enumerate(offs) if s <= r["hole"] < e or s >= r["hole"])
    room = a.max_len - 2
    lo = max(0, hole - int(room * a.before))
    hi = min(len(offs), lo + room)
    lo = max(0, hi - room)
    return text[offs[lo][0] : offs[hi - 1][1]]


def encode(tok, texts, max_len):
    return [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]


def batches(ids, ys, bs, pad_id, max_len, pad, rng=None):
    order = list(range(len(ids)))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, len(order), bs):
        idx = order[i : i + bs]
        L = max(len(ids[j]) for j in idx) if pad == "dynamic" else max_len
        x = torch.full((len(idx), L), pad_id, dtype=torch.long)
        for k, j in enumerate(idx):
            x[k, : len(ids[j])] = torch.tensor(ids[j])
        yield x, (x != pad_id).long(), torch.tensor([ys[j] for j in idx])


def evaluate(model, ids, ys, pad_id, a):
    model.eval()
    logits = []
    with torch.no_grad():
        for x, m, _ in batches(ids, ys, 64, pad_id, a.max_len, "dynamic"):
            logits.append(model(input_ids=x, attention_mask=m).logits)
    model.train()
    lg = torch.cat(logits)
    return float((lg.argmax(-1) == torch.tensor(ys)).float().mean()), lg


def main():
    a = args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    t0 = time.time()
    splits, labels = load_rows(a)
    tok = tokenizer(a, splits)
    texts = {s: [window_text(a, tok, r) for r in rs] for s, rs in splits.items()}
    ys = {s: [r["y"] for r in rs] for s, rs in splits.items()}
    ids = {s: encode(tok, texts[s], a.max_len) for s in splits}
    prep = time.time() - t0
    info = {
        "args": vars(a),
        "labels": labels,
        "rows": {s: len(v) for s, v in ys.items()},
        "label_mix": {s: dict(Counter(labels[y] for y in v).most_common()) for s, v in ys.items()},
        "mean_tokens": {s: float(np.mean([len(i) for i in v])) for s, v in ids.items()},
        "hole_kept": {s: float(np.mean([HOLE in t for t in v])) for s, v in texts.items()},
        "prep_s": round(prep, 1),
    }
    print(
        json.dumps({k: info[k] for k in ("rows", "mean_tokens", "hole_kept", "prep_s")}), flush=True
    )

    # baselines on the same split (the generic component, through a tiny Task adapter)
    if not a.no_baselines:
        tb = time.time()
        import datasets

        from kdkit.baselines import compute_baselines
        from kdkit.data.metrics import multiclass_metrics

        class T:
            name, is_pair, headline_metric = "exc-research", False, "top1"

            def __init__(s):
                s.labels = labels

            def load(s):
                return datasets.DatasetDict(
                    {
                        k: datasets.Dataset.from_dict({"text": texts[k], "label": ys[k]})
                        for k in texts
                    }
                )

            def fingerprint(s):
                from kdkit.data.fingerprint import hash_json

                return hash_json([texts, ys])

            def evaluate(s, lg, y):
                return multiclass_metrics(lg, y)

        b = compute_baselines(T(), cache_dir=SCRATCH / "cache")
        info["baselines"] = {
            s: {k: round(v, 4) for k, v in b.splits[s].scores.items()} for s in b.splits
        }
        info["baselines_ci"] = {k: [round(x, 4) for x in v] for k, v in b.splits["test"].ci.items()}
        info["baselines_tuned"] = b.tuned
        info["baselines_s"] = round(time.time() - tb, 1)
        print(json.dumps(info["baselines"]), f"{time.time() - tb:.0f}s", flush=True)
        if a.baselines_only:
            (SCRATCH / "results").mkdir(exist_ok=True)
            (SCRATCH / "results" / f"{a.name}.base.json").write_text(json.dumps(info, indent=1))
            return

    from transformers import RobertaConfig, RobertaForSequenceClassification

    if a.init:
        model = RobertaForSequenceClassification.from_pretrained(a.init, num_labels=len(labels))
    else:
        cfg = RobertaConfig(
            vocab_size=len(tok),
            hidden_size=a.hidden,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            intermediate_size=4 * a.hidden,
            max_position_embeddings=a.max_len + 2,
            num_labels=len(labels),
            pad_token_id=tok.pad_token_id,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
        )
        model = RobertaForSequenceClassification(cfg)
    info["params"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = max(1, int(a.warmup * a.steps))

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return (
            1.0 if a.schedule == "constant" else max(0.0, (a.steps - step) / max(1, a.steps - warm))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(a.seed)
    step, best, best_state, curve = 0, -1.0, None, []
    tt = time.time()
    model.train()
    while step < a.steps:
        for x, m, y in batches(
            ids["train"], ys["train"], a.batch, tok.pad_token_id, a.max_len, a.pad, rng
        ):
            loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=m).logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            sched.step()
            step += 1
            if step % a.eval_every == 0 or step == a.steps:
                v, _ = evaluate(model, ids["validation"], ys["validation"], tok.pad_token_id, a)
                curve.append(
                    {
                        "step": step,
                        "val": round(v, 4),
                        "loss": round(float(loss), 4),
                        "s": round(time.time() - tt, 1),
                    }
                )
                print(json.dumps(curve[-1]), flush=True)
                if v > best:
                    best, best_state = (
                        v,
                        {k: t.detach().clone() for k, t in model.state_dict().items()},
                    )
            if step >= a.steps:
                break
    train_s = time.time() - tt
    model.load_state_dict(best_state)
    test, lg = evaluate(model, ids["test"], ys["test"], tok.pad_token_id, a)
    std = torch.tensor([r["src"] == "stdlib" for r in splits["test"]])
    info["test_top1_stdlib_rows"] = (
        round(float((lg.argmax(-1)[std] == torch.tensor(ys["test"])[std]).float().mean()), 4)
        if std.any()
        else None
    )
    info.update(
        {
            "steps": step,
            "train_s": round(train_s, 1),
            "steps_per_s": round(step / train_s, 2),
            "val_top1": round(best, 4),
            "test_top1": round(test, 4),
            "curve": curve,
            "total_s": round(time.time() - t0, 1),
            "load_avg": os.getloadavg(),
        }
    )
    out = SCRATCH / "results" / f"{a.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(
        json.dumps(
            {
                k: info[k]
                for k in ("val_top1", "test_top1", "steps", "train_s", "steps_per_s", "params")
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
