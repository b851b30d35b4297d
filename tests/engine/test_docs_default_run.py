"""docs/configuration.md shows the real default run: ``kdkit config show``'s output, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

from kdkit.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_shows_what_kdkit_config_show_prints(capsys):
    assert main(["config", "show"]) == 0
    printed = capsys.readouterr().out
    first_block = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert first_block is not None
    assert first_block.group(1) == printed  # after a change to the defaults: paste it again
    # the facts the page states in words
    assert "  name: contrastive\n  alpha: 0.0\n" in printed and "  epochs: 10\n" in printed
    assert "  nce_temperature: 0.07\n" in printed
