"""Bounded, strict YAML reading: the one way kdkit turns YAML text into data.

Every YAML kdkit reads (run files, grid files, ``--set`` values) goes through :func:`load`, which
is ``yaml.safe_load`` (no tags that build Python objects, no code) plus limits a hostile or broken
file cannot get past:

* **size**: at most :data:`MAX_BYTES` of text, checked before anything is parsed (a 50 MB file is
  refused at once instead of grinding for minutes);
* **nesting**: at most :data:`MAX_DEPTH` levels of mappings and lists (5,000 nested ``[`` used to
  end in a ``RecursionError`` deep inside PyYAML);
* **aliases**: at most :data:`MAX_ALIASES` ``*alias`` references, and at most
  :data:`MAX_NODES` nodes once every alias is expanded (a 1 KB "billion laughs" file expands to
  billions of nodes; safe_load shares them, but every walk of the data -- validation, line
  numbers, ``config show`` -- does not);
* **duplicate keys**: a key given twice in one mapping is an error naming the key and both lines
  (plain PyYAML keeps the last value silently: ``seed: 0`` then ``seed: 5`` ran with seed 5);
* integers of more digits than Python converts (``sys.get_int_max_str_digits``) are an error, not
  a ``ValueError`` traceback.

Violations raise :class:`YamlLimitError`, a ``yaml.YAMLError`` with ``problem`` and
``problem_mark`` like PyYAML's own errors, so callers report every YAML problem one way.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kdkit.errors import shorten

#: Largest YAML text read, in bytes (UTF-8). Run and grid files are a few KB; pure-Python
#: PyYAML parses about 150 KB per second of CPU, so this bounds a parse to about 1.5 s.
MAX_BYTES = 250_000
#: Deepest nesting of mappings and lists.
MAX_DEPTH = 64
#: Most ``*alias`` references in one document.
MAX_ALIASES = 1_000
#: Most nodes of the document with every alias expanded.
MAX_NODES = 200_000


class YamlLimitError(yaml.YAMLError):
    """The text breaks one of this module's limits (or has a duplicate key).

    Attributes:
        problem: what is wrong, in words.
        problem_mark: where (a ``yaml.Mark`` with 0-based ``line``), or ``None``.
        fix: what to do about it.
    """

    def __init__(self, problem: str, mark: yaml.Mark | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.problem_mark = mark
        self.fix = fix or (
            "kdkit YAML files are small and plain: fewer levels, fewer *aliases, "
            "at most one value per key"
        )
        super().__init__(problem)


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts depth and aliases while composing and refuses duplicate
    keys while constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(
                    f"more than {MAX_ALIASES} *alias references", self.peek_event().start_mark
                )
        self._depth += 1
        if self._depth > MAX_DEPTH + 1:  # (+1: the scalars at the deepest level)
            raise YamlLimitError(
                f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; flatten_mapping handles them
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the base class reports it with its mark
            line = key_node.start_mark.line + 1
            if first is not None:
                raise YamlLimitError(
                    f"duplicate key {shorten(key)!r} (first given on line {first})",
                    key_node.start_mark,
                    "keep one of the two: YAML would silently use the last one",
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded(node: Node, memo: dict[int, tuple[int, int]], path: set[int]) -> tuple[int, int]:
    """(nodes, depth) of ``node`` with every alias expanded, memoised per node.

    The memo keeps the walk linear in the file (an alias's target is walked once) and its
    recursion as deep as the file's own nesting; ``path`` holds the nodes being walked, so an
    alias inside its own anchor (``&a [*a]``, data that contains itself) is found.
    """
    done = memo.get(id(node))
    if done is not None:
        return done
    if id(node) in path:
        raise YamlLimitError("an *alias refers to the mapping or list it is in", node.start_mark)
    path.add(id(node))
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    size, depth = 1, 0
    for child in children:
        n, d = _expanded(child, memo, path)
        size, depth = size + n, max(depth, d)
    if not isinstance(node, ScalarNode):
        depth += 1  # a mapping or list is one level; a scalar none
    path.discard(id(node))
    memo[id(node)] = (size, depth)
    if size > MAX_NODES:
        raise YamlLimitError(
            f"more than {MAX_NODES:,} values, each *alias counted where it is used",
            node.start_mark,
        )
    if depth > MAX_DEPTH:
        raise YamlLimitError(
            f"nested more than {MAX_DEPTH} levels deep once its *aliases are expanded",
            node.start_mark,
        )
    return size, depth


def compose(text: str) -> Node | None:
    """The node tree of ``text`` (for line numbers), within every limit of this module.

    Raises:
        yaml.YAMLError: a syntax error or a broken limit (:class:`YamlLimitError`).
    """
    check_size(text)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _expanded(node, {}, set())
    return node


def load_node(node: Node | None) -> Any:
    """The data of a node tree :func:`compose` returned (safe tags only, no duplicate keys)."""
    if node is None:
        return None
    loader = _BoundedLoader("")
    try:
        return loader.construct_document(node)
    except ValueError as exc:  # int("9" * 5000): beyond Python's int-digits limit
        if isinstance(exc, yaml.YAMLError):
            raise
        raise YamlLimitError(f"a value cannot be read: {shorten(str(exc))}") from None
    finally:
        loader.dispose()


def load(text: str) -> Any:
    """``yaml.safe_load(text)`` within every limit of this module (see the module docstring)."""
    return load_node(compose(text))


def check_size(text: str) -> None:
    """Refuse text over :data:`MAX_BYTES` before parsing it."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlLimitError(
            f"{len(text.encode('utf-8', 'surrogatepass')):,} bytes is more than the "
            f"{MAX_BYTES:,} a kdkit YAML file may hold"
        )
