"""Markdown table of results/*.json (training runs) with the baselines of the same split."""

import json
import os
from pathlib import Path

R = Path(os.environ.get("SIGNAL_SCRATCH", "/work/scratch/signal")) / "results"
rows = []
for f in sorted(R.glob("*.json")):
    if f.name.endswith(".base.json"):
        continue
    j = json.loads(f.read_text())
    b = j.get("baselines", {}).get("test", {})
    base = j
    if not b:  # baselines from a sibling baselines-only run on the same texts
        for cand in [R / f"{f.stem}.base.json"] + sorted(R.glob("*.base.json")):
            if cand.is_file():
                bj = json.loads(cand.read_text())
                if (
                    bj["rows"] == j["rows"]
                    and bj["args"]["window"] == j["args"]["window"]
                    and bj["args"]["labels"] == j["args"]["labels"]
                    and bj["args"]["stdlib_only"] == j["args"]["stdlib_only"]
                ):
                    b, base = bj["baselines"]["test"], bj
                    break
    a = j["args"]
    rows.append(
        [
            f.stem,
            f"{j['rows']['train']}/{j['rows']['validation']}/{j['rows']['test']}",
            str(len(j["labels"])),
            f"{a['layers']}x{a['hidden']}",
            str(j["steps"]),
            f"{j['train_s']:.0f}",
            f"{j['steps_per_s']:.2f}",
            f"{j['val_top1']:.3f}",
            f"{j['test_top1']:.3f}",
            f"{b.get('majority', float('nan')):.3f}",
            f"{b.get('tfidf_lr', float('nan')):.3f}",
        ]
    )
head = [
    "run",
    "rows train/val/test",
    "labels",
    "model",
    "steps",
    "train s",
    "steps/s",
    "val top-1",
    "test top-1",
    "majority (test)",
    "TF-IDF+LR (test)",
]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    print("| " + " | ".join(r) + " |")
