"""One-token semantic mutations of real functions, edited in the source text.

Three kinds, in the style of CuBERT's synthetic bug-detection tasks:

* ``variable_misuse`` — one use of a local variable replaced by another local of the function;
* ``swapped_operands`` — the operands of a non-commutative binary operator or comparison swapped;
* ``wrong_operator`` — a binary, comparison or boolean operator replaced by a plausible other.

Edits are made on the original text (never through ``ast.unparse``), so a mutant differs from its
function only in the edited span; every mutant is checked to parse.
"""

from __future__ import annotations

import ast
import random
import warnings
from dataclasses import dataclass

from kdkit.data.pyfuncs import PyFunction

KINDS = ("variable_misuse", "swapped_operands", "wrong_operator")

#: Operator -> its source symbol and the operators it may be wrongly replaced by.
BIN_OPS: dict[type, tuple[str, tuple[str, ...]]] = {
    ast.Add: ("+", ("-",)),
    ast.Sub: ("-", ("+",)),
    ast.Mult: ("*", ("/", "+")),
    ast.Div: ("/", ("*", "//")),
    ast.FloorDiv: ("//", ("/", "%")),
    ast.Mod: ("%", ("//",)),
    ast.LShift: ("<<", (">>",)),
    ast.RShift: (">>", ("<<",)),
    ast.BitAnd: ("&", ("|",)),
    ast.BitOr: ("|", ("&", "^")),
    ast.BitXor: ("^", ("|",)),
}
CMP_OPS: dict[type, tuple[str, tuple[str, ...]]] = {
    ast.Lt: ("<", ("<=", ">")),
    ast.LtE: ("<=", ("<", ">=")),
    ast.Gt: (">", (">=", "<")),
    ast.GtE: (">=", (">", "<=")),
    ast.Eq: ("==", ("!=",)),
    ast.NotEq: ("!=", ("==",)),
    ast.Is: ("is", ("is not",)),
    ast.IsNot: ("is not", ("is",)),
    ast.In: ("in", ("not in",)),
    ast.NotIn: ("not in", ("in",)),
}
BOOL_OPS: dict[type, tuple[str, tuple[str, ...]]] = {
    ast.And: ("and", ("or",)),
    ast.Or: ("or", ("and",)),
}
#: Operators whose operands may be swapped (swapping changes the meaning).
NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.LShift, ast.RShift, ast.Pow)
ORDERED_CMP = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` by ``replacement``; ``kind`` is one of :data:`KINDS`."""

    kind: str
    start: int
    end: int
    replacement: str

    def apply(self, text: str) -> str:
        """The edited text."""
        return text[: self.start] + self.replacement + text[self.end :]


def local_names(fn: PyFunction) -> set[str]:
    """Parameters and names assigned in the function (its locals, nested scopes included)."""
    a = fn.node.args
    names = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
    for node in fn.walk():
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _operator_edit(
    fn: PyFunction,
    left: ast.AST,
    right: ast.AST,
    symbol: str,
    wrong: tuple[str, ...],
    rng: random.Random,
) -> Edit | None:
    """Replace the operator between ``left`` and ``right`` if the gap holds just that symbol."""
    _, l_end = fn.span(left)
    r_start, _ = fn.span(right)
    gap = fn.text[l_end:r_start]
    if " ".join(gap.split()) != symbol:  # parentheses, comments or line breaks in the gap
        return None
    at = l_end + gap.index(symbol.split()[0])
    return Edit("wrong_operator", at, at + len(gap.strip()), rng.choice(wrong))


def candidate_edits(fn: PyFunction, rng: random.Random) -> dict[str, list[Edit]]:
    """Every possible one-token mutation of ``fn``, by kind (may be empty lists)."""
    out: dict[str, list[Edit]] = {k: [] for k in KINDS}
    local = sorted(local_names(fn))
    for node in fn.walk():
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local:
            others = [n for n in local if n != node.id]
            if others:
                s, e = fn.span(node)
                out["variable_misuse"].append(Edit("variable_misuse", s, e, rng.choice(others)))
        elif isinstance(node, ast.BinOp):
            sym = BIN_OPS.get(type(node.op))
            if sym:
                edit = _operator_edit(fn, node.left, node.right, sym[0], sym[1], rng)
                if edit:
                    out["wrong_operator"].append(edit)
            if isinstance(node.op, NON_COMMUTATIVE):
                out["swapped_operands"].extend(_swap(fn, node.left, node.right))
        elif isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                sym = CMP_OPS.get(type(op))
                if sym:
                    edit = _operator_edit(fn, left, right, sym[0], sym[1], rng)
                    if edit:
                        out["wrong_operator"].append(edit)
                if len(node.ops) == 1 and isinstance(op, ORDERED_CMP):
                    out["swapped_operands"].extend(_swap(fn, left, right))
                left = right
        elif isinstance(node, ast.BoolOp) and len(node.values) == 2:
            sym = BOOL_OPS[type(node.op)]
            edit = _operator_edit(fn, node.values[0], node.values[1], sym[0], sym[1], rng)
            if edit:
                out["wrong_operator"].append(edit)
    return out


def _swap(fn: PyFunction, left: ast.AST, right: ast.AST) -> list[Edit]:
    ls, le = fn.span(left)
    rs, re_ = fn.span(right)
    a, gap, b = fn.text[ls:le], fn.text[le:rs], fn.text[rs:re_]
    if a == b or "\n" in gap or "(" in gap or ")" in gap or "#" in gap:
        return []
    return [Edit("swapped_operands", ls, re_, b + gap + a)]


def parses(text: str) -> bool:
    """Whether ``text`` is valid Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return False
    return True


def mutate(fn: PyFunction, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> Edit | None:
    """One random valid mutation of ``fn``: a kind drawn uniformly among the kinds the function
    allows, then a site; ``None`` if there is none. The mutant always parses."""
    edits = candidate_edits(fn, rng)
    available = [k for k in kinds if edits[k]]
    rng.shuffle(available)
    for kind in available:
        sites = edits[kind][:]
        rng.shuffle(sites)
        for edit in sites[:5]:
            mutated = edit.apply(fn.text)
            if mutated != fn.text and parses(mutated):
                return edit
    return None
