"""The `when:` language's syntax tree: frozen nodes, the walk over them, and its error.

engine.core.expressions parses text into these (and re-exports them); the semantics are
summed up there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from engine.errors import InvalidInput

FUNCTIONS = ("max", "min", "count", "all", "any")  # the aggregates; nothing else is callable
WILDCARD = "*"  # a path segment: each item of the list before it

Value: TypeAlias = bool | int | float | str | None


class ExpressionError(InvalidInput, ValueError):
    """A `when` expression that does not parse or cannot be evaluated, located by column."""

    def __init__(self, message: str, column: int, hint: str = "") -> None:
        located = f"{message} at column {column}"
        super().__init__(f"{located}: {hint}" if hint else located)
        self.message = message  # without the column and hint, which str() includes
        self.column = column
        self.hint = hint

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would re-call __init__ with the formatted string only.
        return (type(self), (self.message, self.column, self.hint))


@dataclass(frozen=True)
class Constant:
    """A literal: null, true, false, a number or a string."""

    value: Value
    column: int


@dataclass(frozen=True)
class Reference:
    """A dotted path into the context, e.g. ("steps", "train", "status")."""

    path: tuple[str, ...]
    column: int


@dataclass(frozen=True)
class Unary:
    """`not x` or `-x`."""

    op: str
    operand: Node
    column: int


@dataclass(frozen=True)
class Arithmetic:
    """A left-to-right run of operators of one precedence: first (op operand)*."""

    first: Node
    rest: tuple[tuple[str, int, Node], ...]  # (operator, its column, right operand)


@dataclass(frozen=True)
class Comparison:
    """`left op right` for one of == != < <= > >=."""

    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True)
class Logical:
    """`a and b and ...` or `a or b or ...`."""

    op: str
    operands: tuple[Node, ...]
    column: int


@dataclass(frozen=True)
class Call:
    """An aggregate, `max(steps.train.instances.*.metrics.auc)`: one of FUNCTIONS over the
    list a reference gives (see the module's docstring)."""

    function: str
    argument: Reference
    column: int

    @property
    def text(self) -> str:
        """As written, without spaces: `max(steps.train.instances.*.metrics.auc)`."""
        return f"{self.function}({'.'.join(self.argument.path)})"


Node: TypeAlias = Constant | Reference | Unary | Arithmetic | Comparison | Logical | Call


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Arithmetic):
        return (node.first, *(operand for _, _, operand in node.rest))
    if isinstance(node, Comparison):
        return (node.left, node.right)
    if isinstance(node, Logical):
        return node.operands
    if isinstance(node, Call):
        return (node.argument,)
    return ()


def walk(root: Node) -> Iterator[tuple[Node, int]]:
    """Every node under `root` with its depth (the root is 1), in source order.

    Iterative, so no input can exhaust the stack.
    """
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(_children(node)))


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its source text and the root of its syntax tree."""

    text: str
    root: Node

    def references(self) -> frozenset[tuple[str, ...]]:
        """Every path referenced, e.g. ("params", "x"), ("baseline",) or, in an aggregate,
        ("steps", "train", "instances", "*", "metrics", "auc")."""
        return frozenset(n.path for n, _ in walk(self.root) if isinstance(n, Reference))
