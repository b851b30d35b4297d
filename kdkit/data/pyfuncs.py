"""Functions of a parsed module as standalone source texts, with AST positions mapped into them.

The builders edit real source text in place (so a correct and a mutated function differ only in
the edited span, never in formatting); AST positions are UTF-8 *byte* columns, converted here to
character offsets into the dedented function text.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class PyFunction:
    """One function (a module-level function or a method), dedented.

    Attributes:
        text: the source from ``def`` to the end of the body, dedented (decorators excluded).
        node: its AST node (positions refer to the *module*, see :meth:`offset`).
        name: the function's name.
        qualname: ``Class.method`` or ``function``.
    """

    text: str
    node: FunctionNode
    name: str
    qualname: str
    _indent: int = 0
    _line_starts: list[int] = field(default_factory=list)
    _lines: list[str] = field(default_factory=list)

    def offset(self, lineno: int, col_byte: int) -> int:
        """Character offset in :attr:`text` of a module position (1-based line, byte column)."""
        i = lineno - self.node.lineno
        if not 0 <= i < len(self._lines):
            raise ValueError(f"line {lineno} is outside function {self.qualname}")
        line = self._lines[i]
        col = col_byte - self._indent
        return self._line_starts[i] + len(line.encode("utf-8")[:col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        """``[start, end)`` character span in :attr:`text` of a node inside the function."""
        return (
            # ast.AST declares no positions; the nodes passed (expr, stmt) all have them
            self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.offset(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def walk(self) -> Iterator[ast.AST]:
        """Every node of the function's signature and body (decorators, which lie before the
        ``def`` line and outside :attr:`text`, are left out)."""
        roots: list[ast.AST] = [self.node.args, *self.node.body]
        if self.node.returns is not None:
            roots.append(self.node.returns)
        for root in roots:
            yield from ast.walk(root)

    @property
    def num_lines(self) -> int:
        """Number of lines of :attr:`text`."""
        return len(self._lines)


def _outer_functions(tree: ast.Module) -> Iterator[tuple[FunctionNode, str]]:
    """Functions not nested in another function (module level and in classes, recursively)."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        parent, prefix = stack.pop()
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child, prefix + child.name
            elif isinstance(child, ast.ClassDef):
                stack.append((child, prefix + child.name + "."))
            elif isinstance(child, ast.If | ast.Try | ast.With | ast.For | ast.While):
                stack.append((child, prefix))  # `if sys.platform: def f(): ...`


def extract_functions(
    source: str, tree: ast.Module, lines: list[str] | None = None
) -> list[PyFunction]:
    """Every non-nested function of a module as a :class:`PyFunction`, in source order.

    Functions whose continuation lines are indented less than their ``def`` (e.g. a multi-line
    string flush with the margin) cannot be dedented faithfully and are left out.
    """
    lines = lines if lines is not None else source.splitlines(keepends=True)
    out: list[PyFunction] = []
    for node, qualname in _outer_functions(tree):
        if node.end_lineno is None:
            continue
        own = lines[node.lineno - 1 : node.end_lineno]
        if not own:
            continue
        first = own[0]
        indent_chars = len(first) - len(first.lstrip(" \t"))
        prefix = first[:indent_chars]
        if any(line.strip() and not line.startswith(prefix) for line in own):
            continue
        if len(prefix.encode("utf-8")) != node.col_offset:
            continue  # `class A: def f(): ...` on one line: positions would not map
        dedented = [line[indent_chars:] if line.strip() else line.lstrip(" \t") for line in own]
        # Cut the last line at the node's end (drops a trailing comment or `; x = 1`).
        last = own[-1]
        end_char = len(last.encode("utf-8")[: node.end_col_offset].decode("utf-8", "replace"))
        dedented[-1] = last[indent_chars:end_char]
        starts, pos = [], 0
        for line in dedented:
            starts.append(pos)
            pos += len(line)
        text = "".join(dedented)
        out.append(
            PyFunction(
                text, node, node.name, qualname, len(prefix.encode("utf-8")), starts, dedented
            )
        )
    out.sort(key=lambda f: f.node.lineno)
    return out


_COMMENT = re.compile(r"#[^\n]*")
_SPACE = re.compile(r"\s+")


def normalise_code(text: str) -> str:
    """A near-duplicate key: comments (approximately: from ``#`` to end of line) and all
    whitespace removed. Two functions with equal keys differ at most in layout and comments."""
    return _SPACE.sub("", _COMMENT.sub("", text))
