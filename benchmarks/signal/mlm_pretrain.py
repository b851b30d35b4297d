"""MLM pre-training of a small RoBERTa on function-level snippets of all local code
(functions.txt of exc_data.py: stdlib + kdkit's pinned site-packages), saved as an HF folder
that exc_train.py --init fine-tunes. Exception-task functions are in the corpus, but no label is:
the type at the hole is only ever seen as ordinary code (test functions included, as in any
pre-training on a corpus that contains the benchmark's sources; the labels never enter).

python mlm_pretrain.py --out DIR --steps N [--layers 2 --hidden 128]
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

SCRATCH = Path(os.environ.get("SIGNAL_SCRATCH", "/work/scratch/signal"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="all")
    p.add_argument("--tok", default="bpe-all-corpus-8000")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--functions", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(SCRATCH / "tok" / a.tok / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    t0 = time.time()
    funcs = [json.loads(line) for line in open(SCRATCH / "data" / a.data / "functions.txt")]
    rng.shuffle(funcs)
    funcs = funcs[: a.functions]
    room = a.max_len - 2
    ids = []
    for enc in tok(funcs, add_special_tokens=False)["input_ids"]:
        lo = rng.randrange(0, max(1, len(enc) - room + 1))  # a random window of the function
        ids.append([0] + enc[lo : lo + room] + [2])
    prep = time.time() - t0
    print(f"{len(ids)} snippets, prep {prep:.0f}s", flush=True)
    cfg = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=4 * a.hidden,
        max_position_embeddings=a.max_len + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    model = RobertaForMaskedLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = max(1, a.steps // 16)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (a.steps - s) / (a.steps - warm))
    )
    special = torch.tensor([0, 1, 2, 3, 4])
    tt = time.time()
    model.train()
    for step in range(a.steps):
        batch = [ids[rng.randrange(len(ids))] for _ in range(a.batch)]
        L = max(len(b) for b in batch)
        x = torch.full((len(batch), L), 1, dtype=torch.long)
        for k, b in enumerate(batch):
            x[k, : len(b)] = torch.tensor(b)
        mask = (x != 1).long()
        # BERT masking: 15 % of real tokens; of those 80 % <mask>, 10 % random, 10 % kept
        cand = ~torch.isin(x, special)
        pick = (torch.rand(x.shape) < 0.15) & cand
        labels = torch.where(pick, x, torch.full_like(x, -100))
        r = torch.rand(x.shape)
        x = torch.where(pick & (r < 0.8), torch.full_like(x, 4), x)
        x = torch.where(pick & (r >= 0.8) & (r < 0.9), torch.randint(5, len(tok), x.shape), x)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            print(
                json.dumps(
                    {
                        "step": step + 1,
                        "loss": round(loss.item(), 3),
                        "s": round(time.time() - tt, 1),
                    }
                ),
                flush=True,
            )
    out = Path(a.out)
    model.save_pretrained(out)
    tok.save_pretrained(out)  # so the folder loads as an ordinary HF model (kdkit teach)
    (out / "pretrain.json").write_text(
        json.dumps({**vars(a), "prep_s": prep, "train_s": time.time() - tt})
    )
    print(f"saved {out} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
