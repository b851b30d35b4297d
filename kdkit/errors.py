"""User-facing errors.

Every error a user can cause (a wrong config, a missing file, a broken plugin, NaN logits, a
corrupt cache) is a :class:`KdkitError`: it says *what* is wrong, *where*, and *how to fix it*.
The CLI prints it without a traceback and exits with :attr:`KdkitError.exit_code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Longest user-given value (a key, a setting, a data line) a message quotes in full.
QUOTE_LIMIT = 80
#: Most problems a :class:`ConfigError` lists one by one; the rest are counted.
SHOWN_PROBLEMS = 20


def shorten(value: Any, limit: int = QUOTE_LIMIT) -> Any:
    """``value`` itself when short, else the start of its text and its length.

    For quoting what a user gave in a message: a 4 MB line or a 5,000-digit number is cut,
    never echoed in full.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"<an integer of {value.bit_length():,} bits>"  # repr() may refuse (4300 digits)
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else repr(value)
    elif isinstance(value, (int, float, bool)) or value is None:
        text = repr(value)
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):
            return f"<a {type(value).__name__}>"
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... ({len(text):,} characters)"


class KdkitError(Exception):
    """An error the user can fix.

    Args:
        what: what is wrong, in one sentence.
        where: the file, file:line, option path or component concerned.
        fix: what to do about it.
    """

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """The message as the CLI prints it."""
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a configuration (a run file, a grid file).

    ``file`` names the file the problem is in when it is not the error's own file (a grid's
    problem located in its base run file).
    """

    path: str  # dotted path, e.g. "method.temperature"
    message: str
    line: int | None = None
    suggestion: str | None = None
    file: str | None = None

    def render(self, filename: str | None) -> str:
        """``file:line path: message (suggestion)``; ``file`` when set, else ``filename``."""
        where = self.file or filename or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        path = shorten(self.path)
        text = f"{where} {path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text}\n    {self.suggestion}" if self.suggestion else text


#: The fix of a :class:`ConfigError` unless its raiser gives a more precise one.
CONFIG_FIX = (
    "edit the file (or the --set override) as suggested; `kdkit config schema` lists every option"
)


class ConfigError(KdkitError):
    """One or more problems in a configuration (a run file, a grid file), reported together.

    Args:
        problems: every problem found, each with its path, line and suggestion.
        filename: the file the problems are in (a problem's own ``file`` wins).
        subject: what the message says the problems are in (default "the configuration").
        fix: what to do (default :data:`CONFIG_FIX`).
    """

    def __init__(
        self,
        problems: list[Problem],
        filename: str | None = None,
        *,
        subject: str = "the configuration",
        fix: str = CONFIG_FIX,
    ) -> None:
        self.problems = problems
        self.filename = filename
        n = len(problems)
        # thousands of unknown keys must not print thousands of lines: the first few, then a count
        body = "\n".join("  " + p.render(filename) for p in problems[:SHOWN_PROBLEMS])
        if n > SHOWN_PROBLEMS:
            body += f"\n  ... and {n - SHOWN_PROBLEMS:,} more"
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in {subject}:\n{body}", fix=fix)

    def render(self) -> str:  # the problems carry their own locations
        return f"{self.what}\n  fix: {self.fix}"


class PluginError(KdkitError):
    """A plugin is broken, missing, or clashes with another."""


class NonFiniteLossError(KdkitError):
    """A loss term became NaN or infinite during training."""
