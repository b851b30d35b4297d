"""docs/plugin-tutorial.md is complete: every file of the example plugin package is on the page,
byte for byte, so a reader needs no code outside it (and CI installs and tests that package)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "plugin-tutorial.md"
EXAMPLE = ROOT / "docs" / "examples" / "kdkit-logit-mse"
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```\n", re.S)


def _package_files() -> set[str]:
    files = {"pyproject.toml"}
    for pattern in ("src/**/*.py", "tests/**/*.py"):
        files |= {str(p.relative_to(EXAMPLE)) for p in EXAMPLE.glob(pattern)}
    return files


def test_the_tutorial_shows_every_file_of_the_example_package_verbatim():
    blocks = dict(BLOCK.findall(TUTORIAL.read_text(encoding="utf-8")))
    assert set(blocks) == _package_files(), (
        "the tutorial's <!-- file: ... --> blocks and the example package's files differ"
    )
    for path, code in blocks.items():
        assert code == (EXAMPLE / path).read_text(encoding="utf-8"), (
            f"docs/plugin-tutorial.md shows a different {path} than docs/examples/kdkit-logit-mse: "
            "copy the file into the page (or the page into the file)"
        )
