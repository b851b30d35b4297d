"""Semantics-preserving rewrites of a Python function (clone positives), on its AST.

:func:`rewrite` parses a function, applies a random subset of the rewrites below wherever they
are valid, and renders the result with ``ast.unparse`` (itself a rewrite: layout, quotes,
parentheses and comments are normalised):

* ``rename`` — consistent renaming of parameters and local variables to fresh names;
* ``reorder`` — swapping adjacent independent assignments (disjoint reads/writes, no calls);
* ``loop_to_comprehension`` / ``comprehension_to_loop`` — ``x = []; for ...: x.append(e)`` and
  ``x = [e for ...]`` into each other;
* ``flip_comparison`` — ``a < b`` into ``b > a`` (side-effect-free operands only);
* ``swap_branches`` — ``if c: A else: B`` into ``if not c: B else: A``;
* ``drop_docstring`` — removing the docstring.

Renaming parameters changes the keyword interface of a function, and a comprehension does not
leak its loop variable; both are accepted as "the same functionality", as BigCloneBench does.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Iterator

#: Generic names that renamed variables take (a numeric suffix avoids clashes).
NAME_POOL = (
    "value",
    "item",
    "result",
    "data",
    "node",
    "obj",
    "tmp",
    "arg",
    "elem",
    "res",
    "acc",
    "key",
    "val",
    "entry",
    "cur",
    "x",
    "y",
    "z",
    "n",
    "i",
    "j",
    "k",
    "s",
    "t",
    "buf",
    "out",
    "ret",
    "part",
    "seq",
    "coll",
    "first",
    "second",
    "other",
    "target",
    "source",
    "state",
    "info",
    "a",
    "b",
    "c",
    "p",
    "q",
    "v",
    "w",
)
SIDE_EFFECTS = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Lambda)
FLIP = {
    ast.Lt: ast.Gt,
    ast.Gt: ast.Lt,
    ast.LtE: ast.GtE,
    ast.GtE: ast.LtE,
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
}


def _pure(node: ast.AST) -> bool:
    return not any(isinstance(n, SIDE_EFFECTS) for n in ast.walk(node))


def _names(node: ast.AST, ctx: type) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _statement_lists(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def rename(fn: ast.FunctionDef | ast.AsyncFunctionDef, rng: random.Random) -> int:
    """Rename parameters and locals consistently to fresh names; returns how many."""
    declared = {
        n
        for node in ast.walk(fn)
        if isinstance(node, ast.Global | ast.Nonlocal)
        for n in node.names
    }
    a = fn.args
    params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    params += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    local = set(params) | _names(fn, ast.Store)
    local -= declared | {"self", "cls", "__class__"}
    used = _names(fn, ast.Load) | _names(fn, ast.Store) | set(params) | {fn.name}
    used |= {n.name for n in ast.walk(fn) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    used |= {n.arg for n in ast.walk(fn) if isinstance(n, ast.arg)}
    mapping: dict[str, str] = {}
    pool = list(NAME_POOL)
    rng.shuffle(pool)
    for old in sorted(local):
        for cand in pool + [f"{p}{i}" for i in range(2, 50) for p in pool[:5]]:
            if cand not in used and cand not in mapping.values():
                mapping[old] = cand
                break
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]
    return len(mapping)


def reorder(fn: ast.AST, rng: random.Random, p: float = 0.5) -> int:
    """Swap adjacent independent ``name = pure expression`` statements."""
    done = 0
    for block in _statement_lists(fn):
        i = 0
        while i + 1 < len(block):
            a, b = block[i], block[i + 1]
            if (
                isinstance(a, ast.Assign)
                and isinstance(b, ast.Assign)
                and _pure(a)
                and _pure(b)
                and all(isinstance(t, ast.Name) for t in a.targets + b.targets)
            ):
                wa, wb = _names(a, ast.Store), _names(b, ast.Store)
                ra, rb = _names(a.value, ast.Load), _names(b.value, ast.Load)
                if not (wa & (rb | wb)) and not (wb & ra) and rng.random() < p:
                    block[i], block[i + 1] = b, a
                    done += 1
                    i += 1
            i += 1
    return done


def _append_loop(stmt: ast.stmt) -> tuple[str, ast.For, ast.expr, ast.expr | None] | None:
    """``for T in I: [if C:] X.append(E)`` -> (X, loop, E, C)."""
    if not isinstance(stmt, ast.For) or stmt.orelse or len(stmt.body) != 1:
        return None
    body, cond = stmt.body[0], None
    if isinstance(body, ast.If) and not body.orelse and len(body.body) == 1:
        body, cond = body.body[0], body.test
    if (
        isinstance(body, ast.Expr)
        and isinstance(body.value, ast.Call)
        and isinstance(body.value.func, ast.Attribute)
        and body.value.func.attr == "append"
        and isinstance(body.value.func.value, ast.Name)
        and len(body.value.args) == 1
        and not body.value.keywords
    ):
        return body.value.func.value.id, stmt, body.value.args[0], cond
    return None


def loops_and_comprehensions(fn: ast.AST, rng: random.Random, p: float = 0.7) -> int:
    """Turn append-loops into list comprehensions and back."""
    done = 0
    for block in _statement_lists(fn):
        i = 0
        while i < len(block):
            stmt = block[i]
            nxt = block[i + 1] if i + 1 < len(block) else None
            # x = [] ; for t in it: [if c:] x.append(e)  ->  x = [e for t in it if c]
            if (
                nxt is not None
                and isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.List)
                and not stmt.value.elts
            ):
                found = _append_loop(nxt)
                if found and found[0] == stmt.targets[0].id and rng.random() < p:
                    _, loop, elt, cond = found
                    comp = ast.ListComp(
                        elt=elt,
                        generators=[
                            ast.comprehension(
                                target=loop.target,
                                iter=loop.iter,
                                ifs=[cond] if cond else [],
                                is_async=0,
                            )
                        ],
                    )
                    block[i : i + 2] = [ast.Assign(targets=stmt.targets, value=comp, lineno=0)]
                    done += 1
            # x = [e for t in it if c]  ->  x = [] ; for t in it: if c: x.append(e)
            elif (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.ListComp)
                and len(stmt.value.generators) == 1
                and not stmt.value.generators[0].is_async
                and len(stmt.value.generators[0].ifs) <= 1
                and rng.random() < p
            ):
                name = stmt.targets[0].id
                gen = stmt.value.generators[0]
                append: ast.stmt = ast.Expr(
                    ast.Call(
                        ast.Attribute(ast.Name(name, ast.Load()), "append", ast.Load()),
                        [stmt.value.elt],
                        [],
                    )
                )
                if gen.ifs:
                    append = ast.If(test=gen.ifs[0], body=[append], orelse=[])
                loop = ast.For(target=gen.target, iter=gen.iter, body=[append], orelse=[], lineno=0)
                block[i : i + 1] = [
                    ast.Assign(
                        targets=[ast.Name(name, ast.Store())],
                        value=ast.List([], ast.Load()),
                        lineno=0,
                    ),
                    loop,
                ]
                done += 1
                i += 1
            i += 1
    return done


def flip_comparisons(fn: ast.AST, rng: random.Random, p: float = 0.5) -> int:
    """``a < b`` -> ``b > a`` (and ``==``/``!=`` mirrored) where both sides are pure."""
    done = 0
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and type(node.ops[0]) in FLIP
            and _pure(node)
            and rng.random() < p
        ):
            node.left, node.comparators = node.comparators[0], [node.left]
            node.ops = [FLIP[type(node.ops[0])]()]
            done += 1
    return done


def swap_branches(fn: ast.AST, rng: random.Random, p: float = 0.5) -> int:
    """``if c: A else: B`` -> ``if not c: B else: A`` (``not not c`` is simplified to ``c``)."""
    done = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and node.orelse and rng.random() < p:
            test = node.test
            node.test = (
                test.operand
                if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
                else ast.UnaryOp(ast.Not(), test)
            )
            node.body, node.orelse = node.orelse, node.body
            done += 1
    return done


def drop_docstring(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Remove the docstring (a function of only a docstring keeps ``pass``)."""
    body = fn.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        fn.body = body[1:] or [ast.Pass()]
        return 1
    return 0


def rewrite(text: str, rng: random.Random, p_rename: float = 0.9) -> tuple[str, dict[str, int]]:
    """A semantics-preserving rewrite of the function in ``text`` and the rewrites applied.

    Each family is tried with its own probability; the result is always re-rendered by
    ``ast.unparse`` (the ``reformat`` rewrite)."""
    tree = ast.parse(text)
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
    applied = {
        "rename": rename(fn, rng) if rng.random() < p_rename else 0,
        "reorder": reorder(fn, rng),
        "loop_comprehension": loops_and_comprehensions(fn, rng),
        "flip_comparison": flip_comparisons(fn, rng) if rng.random() < 0.5 else 0,
        "swap_branches": swap_branches(fn, rng) if rng.random() < 0.5 else 0,
        "drop_docstring": drop_docstring(fn) if rng.random() < 0.5 else 0,
    }
    ast.fix_missing_locations(tree)
    return ast.unparse(tree), applied


def same_function(text: str) -> ast.AST:  # pragma: no cover - debugging helper
    """A deep copy of the parsed function (for comparing rewrites by hand)."""
    return copy.deepcopy(ast.parse(text).body[0])
