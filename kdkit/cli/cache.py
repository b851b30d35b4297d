"""``kdkit cache ls|verify|clear|import``: what kdkit keeps in its cache, checking it against its
integrity manifests, removing it (only on request), and importing teacher outputs made elsewhere
(:mod:`kdkit.cli.cache_import`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from kdkit.cli.cache_import import add_import_parser, logits_fields
from kdkit.errors import KdkitError

#: Sub-folders of the cache root and what they hold.
KINDS = {
    "teacher-outputs": "teacher logits (full or top-k)/features/token states per teacher, data "
    "and split (safetensors)",
    "teacher-imports": "teacher outputs imported with `kdkit cache import` (safetensors)",
    "teachers": "teachers kdkit trained (code-teacher, minilm), save_pretrained format",
    "tokenizers": "student BPE tokenizers per data and vocabulary size",
    "built": "offline datasets built from local code",
    "pretrained": "code encoders pre-trained on local code (code-teacher's pretrain), HF folders",
    "baselines": "majority / stratified / TF-IDF baselines per task data and options (JSON + SHA-256)",
    "datasets": "prepared task splits",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="list, verify, clear kdkit's caches; import teacher outputs",
        description="List, verify or clear the teacher-output cache, imported teacher outputs, "
        "trained teachers, tokenizers and built datasets (nothing is deleted unless named); "
        "import teacher outputs computed elsewhere (`kdkit cache import`).",
    )
    p.add_argument("--dir", help="cache root (default: $KDKIT_CACHE or ~/.cache/kdkit)")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = csub.add_parser("ls", help="list cache entries with their sizes")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_ls)
    q = csub.add_parser(
        "verify",
        help="check every cache entry against its integrity manifest",
        description="Re-hash every file of every cache entry and compare it with the entry's "
        "kdkit-manifest.json. Exit 0 when all are intact, 2 (with the list) when an entry is "
        "damaged; entries written before manifests existed are listed as unchecked.",
    )
    q.add_argument("targets", nargs="*", metavar="KEY", help="only these entries (default: all)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_verify)
    q = csub.add_parser(
        "clear",
        help="delete cache entries: a KEY, a KIND, or --all",
        description=f"Delete entries. TARGET is an entry key (from `kdkit cache ls`) "
        f"or a kind: {', '.join(KINDS)}.",
    )
    q.add_argument("targets", nargs="*", metavar="TARGET")
    q.add_argument("--all", action="store_true", help="delete the whole cache")
    q.set_defaults(func=_clear)
    add_import_parser(csub)


def _root(args: argparse.Namespace) -> Path:
    from kdkit.engine.tokenization import default_cache_dir

    return default_cache_dir(args.dir)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _check_baselines(path: Path) -> dict:
    """A cached baselines file against the SHA-256 written beside it."""
    import hashlib

    digest = path.with_name(path.name + ".sha256")
    if not digest.is_file():
        return {"path": str(path), "status": "unchecked", "problems": []}
    same = digest.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    problems = [] if same else [f"{path.name} changed since it was written (its SHA-256 differs)"]
    return {"path": str(path), "status": "ok" if same else "damaged", "problems": problems}


def _entries(root: Path) -> list[dict]:
    out = []
    for kind in KINDS:
        base = root / kind
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.name.startswith(".") or (kind == "baselines" and d.suffix != ".json"):
                continue  # (a baselines entry is NAME.json; NAME.json.sha256 goes with it)
            key = d.stem if kind == "baselines" else d.name
            entry = {"kind": kind, "key": key, "path": str(d), "bytes": _size(d)}
            meta = d / "meta.json"
            if kind in ("teacher-outputs", "teacher-imports") and meta.is_file():
                try:
                    m = json.loads(meta.read_text(encoding="utf-8"))
                    entry.update(
                        teacher=m.get("teacher"),
                        split=m.get("split"),
                        rows=m.get("rows"),
                        teacher_fingerprint=m.get("teacher_fingerprint"),
                        data_fingerprint=m.get("data_fingerprint"),
                        **logits_fields(m),
                    )
                    tokens = m.get("token_states")
                    if isinstance(tokens, dict):  # an entry with token states (docs/caching.md)
                        entry.update(
                            token_states=tokens.get("format"),
                            bytes_per_token=tokens.get("bytes_per_token"),
                        )
                except (ValueError, AttributeError):
                    entry["damaged"] = True
            spec = d / "spec.json"
            if kind == "teachers" and spec.is_file():
                try:
                    m = json.loads(spec.read_text(encoding="utf-8"))
                    entry.update(preset=m.get("preset"), data_fingerprint=m.get("data"))
                except (ValueError, AttributeError):  # not JSON, or not an object
                    entry["damaged"] = True
            out.append(entry)
    return out


def _ls(args: argparse.Namespace) -> int:
    root = _root(args)
    entries = _entries(root)
    damaged = [e["key"] for e in entries if e.get("damaged")]
    if args.json:
        print(json.dumps({"root": str(root), "entries": entries}, indent=2))
        return 2 if damaged else 0
    print(f"cache: {root}")
    if not entries:
        print("  (empty)")
    for e in entries:
        shown = ("teacher", "split", "rows", "preset", "logits", "source_model")
        extra = "  ".join(f"{k}={e[k]}" for k in shown if e.get(k))
        if e.get("bytes_per_token"):
            extra += f"  {e['bytes_per_token']} B/token ({e.get('token_states')})"
        if e.get("bytes_per_example") and e.get("full_logits_bytes_per_example"):
            extra += (
                f"  {e['bytes_per_example']} B/example "
                f"(full logits: {e['full_logits_bytes_per_example']} B)"
            )
        if e.get("damaged"):
            extra += "  DAMAGED (run `kdkit cache verify`)"
        print(f"  {e['kind']:<16} {e['key']:<40} {e['bytes'] / 1e6:8.2f} MB  {extra}")
    if damaged:
        raise KdkitError(
            f"{len(damaged)} cache entr{'y has' if len(damaged) == 1 else 'ies have'} an "
            f"unreadable meta.json/spec.json: {' '.join(damaged)}",
            where=str(root),
            fix=f"delete {'it' if len(damaged) == 1 else 'them'} with `kdkit cache clear "
            f"{' '.join(damaged)}` (built again when needed); `kdkit cache verify` checks "
            "every file",
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from kdkit.errors import KdkitError as _Error
    from kdkit.integrity import check

    root = _root(args)
    entries = _entries(root)
    if args.targets:
        keys = {e["key"] for e in entries}
        unknown = [t for t in args.targets if t not in keys]
        if unknown:
            raise KdkitError(
                f"no cache entry {', '.join(map(repr, unknown))}",
                where=str(root),
                fix="copy a key from `kdkit cache ls`",
            )
        entries = [e for e in entries if e["key"] in args.targets]
    results = []
    for e in entries:
        path = Path(e["path"])
        if e["kind"] == "pretrained":  # the artefact is the model folder (beside its lock)
            path = path / "model"
        if e["kind"] == "baselines":
            results.append({**_check_baselines(path), "kind": e["kind"], "key": e["key"]})
            continue
        try:
            damage = check(path) if path.is_dir() else None
            status = "unchecked" if damage is None else "damaged" if damage else "ok"
            problems = [f"{d.file} {d.reason}" for d in damage or []]
        except _Error:
            status, problems = "damaged", ["kdkit-manifest.json is unreadable"]
        results.append(
            {
                "kind": e["kind"],
                "key": e["key"],
                "path": str(path),
                "status": status,
                "problems": problems,
            }
        )
    bad = [r for r in results if r["status"] == "damaged"]
    if args.json:
        print(json.dumps({"root": str(root), "entries": results}, indent=2))
    else:
        print(f"cache: {root}")
        for r in results:
            print(f"  {r['status']:<9} {r['kind']:<16} {r['key']}")
            for problem in r["problems"][:5]:
                print(f"            {problem}")
        n_unchecked = sum(r["status"] == "unchecked" for r in results)
        print(
            f"{len(results)} entries: {len(results) - len(bad) - n_unchecked} intact, "
            f"{len(bad)} damaged, {n_unchecked} unchecked (written before manifests)"
        )
    if bad:
        bad_keys = " ".join(r["key"] for r in bad)
        print(
            f"kdkit: error: {len(bad)} damaged cache entr{'y' if len(bad) == 1 else 'ies'}\n"
            f"  fix: delete them with `kdkit cache clear {bad_keys}`; they are built again when "
            "needed",
            file=sys.stderr,
        )
        return 2
    return 0


def _clear(args: argparse.Namespace) -> int:
    root = _root(args)
    if not args.targets and not args.all:
        raise KdkitError(
            "say what to delete",
            where="kdkit cache clear",
            fix=f"name entry keys (see `kdkit cache ls`), a kind ({', '.join(KINDS)}), "
            "or pass --all",
        )
    victims: list[Path] = []
    if args.all:
        victims = [root / k for k in KINDS if (root / k).exists()]
    for t in args.targets:
        if t in KINDS:
            if (root / t).exists():
                victims.append(root / t)
            continue
        found = [Path(e["path"]) for e in _entries(root) if e["key"] == t]
        if not found:
            raise KdkitError(
                f"no cache entry '{t}'", where=str(root), fix="copy a key from `kdkit cache ls`"
            )
        victims += found
    for v in victims:
        if v.is_file():  # a baselines entry and its checksum
            v.unlink()
            v.with_name(v.name + ".sha256").unlink(missing_ok=True)
        else:
            shutil.rmtree(v)
        print(f"removed {v}")
    return 0
