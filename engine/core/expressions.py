"""The safe `when:` expression language: tokenizer, Pratt parser, static checker, evaluator.

Nothing is ever handed to Python's eval/exec/compile; the text is tokenized and parsed into
frozen dataclasses and evaluated by walking them. Semantics, briefly:

- Values are null, booleans, numbers (int or float) and strings. A reference is a dotted
  path from a root (params, steps, baseline, trigger, metrics) walked through the context's
  nested mappings; a missing key anywhere on the path (no such metric, no baseline, a step
  that did not run) gives null. `baseline` alone is true iff context["baseline"] is not None.
  A path that ends at a mapping or list is an error: only single values can be compared.
- A segment after the root may contain hyphens (`steps.validate-data.status`), so subtracting
  from a reference needs spaces: `params.a - 1`, not `params.a-1`.
- Arithmetic: null in, null out; division or remainder by zero gives null; `+` also joins two
  strings; any other non-number operand (booleans included) is an error.
- `==`/`!=` never fail (null == null is true; true == 1 is false). Ordering (< <= > >=) with
  null is false; numbers order with numbers, strings with strings, anything else is an error.
- Truthiness: null, false, 0 and "" are false. `and`/`or` short-circuit; they and `not` give
  booleans. Precedence, lowest first: or; and; not; comparisons (not chainable); + -; * / %;
  unary -; parentheses.
- Every failure, in parsing or evaluating, is an ExpressionError carrying a 1-based column.
"""

from __future__ import annotations

import difflib
import functools
import operator
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard

from engine.errors import InvalidInput

MAX_LENGTH = 4096
MAX_DEPTH = 64  # nesting levels; keeps parser and evaluator far below Python's recursion limit
ROOTS = ("params", "steps", "baseline", "trigger", "metrics")

Value: TypeAlias = bool | int | float | str | None

_CONSTANTS: dict[str, Value] = {"true": True, "false": False, "null": None}
_WORDS = ("and", "or", "not")
_SPACE = re.compile(r"[ \t\r\n]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")")
_MISTAKES = {"=": "use '==' to compare", "!": "use 'not'", "&": "use 'and'", "|": "use 'or'"}
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_INFIX = {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_INFIX.update(dict.fromkeys(_COMPARISONS, 4))
_NOT_BP = 3
_NEG_BP = 7
_VERBS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the remainder of"}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_ARITH["%"] = operator.mod
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


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


Node: TypeAlias = Constant | Reference | Unary | Arithmetic | Comparison | Logical


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Arithmetic):
        return (node.first, *(operand for _, _, operand in node.rest))
    if isinstance(node, Comparison):
        return (node.left, node.right)
    if isinstance(node, Logical):
        return node.operands
    return ()


def _walk(root: Node) -> Iterator[tuple[Node, int]]:
    # Iterative, so no input can exhaust the stack; yields (node, depth) in source order.
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
        """Every path referenced, e.g. ("params", "x") or ("baseline",)."""
        return frozenset(n.path for n, _ in _walk(self.root) if isinstance(n, Reference))


@dataclass(frozen=True)
class _Token:
    kind: str  # "op" (operators, parentheses, and/or/not), "const", "ref" or "end"
    text: str
    column: int
    value: Value = None
    path: tuple[str, ...] = ()


def _suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, chars, i = text[start], list[str](), start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(chars), i + 1
        if char == "\\":
            if i + 1 < len(text) and text[i + 1] in "\\'\"":
                chars.append(text[i + 1])
                i += 2
                continue
            raise ExpressionError("invalid escape in string", i + 1, r"only \\, \' and \" work")
        chars.append(char)
        i += 1
    raise ExpressionError("unterminated string", start + 1)


def _read_name(text: str, start: int) -> tuple[_Token, int]:
    match = _NAME.match(text, start)
    assert match is not None  # the caller saw a name's first character
    word, i = match.group(), match.end()
    if word in _WORDS:
        return _Token("op", word, start + 1), i
    if word in _CONSTANTS:
        return _Token("const", word, start + 1, _CONSTANTS[word]), i
    if word not in ROOTS:
        hint = "references start with params., steps., baseline, trigger. or metrics."
        suggestion = _suggest(word.lower(), (*ROOTS, *_CONSTANTS, *_WORDS))
        raise ExpressionError(f"unknown name '{word}'", start + 1, hint + suggestion)
    path = [word]
    while i < len(text) and text[i] == ".":
        segment = _SEGMENT.match(text, i + 1)
        if segment is None:
            raise ExpressionError("expected a name after '.'", i + 2)
        if segment.group().startswith("__"):
            # Paths are only ever looked up in mappings, but dunder names are never meant.
            raise ExpressionError(f"name '{segment.group()}' is not allowed", i + 2)
        path.append(segment.group())
        i = segment.end()
    return _Token("ref", text[start:i], start + 1, path=tuple(path)), i


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if space := _SPACE.match(text, i):
            i = space.end()
        elif number := _NUMBER.match(text, i):
            end = number.end()
            if end < len(text) and _WORD_CHAR.match(text, end):
                raise ExpressionError("invalid number", i + 1)
            literal = number.group()
            value: Value = float(literal) if literal.strip("0123456789") else int(literal)
            tokens.append(_Token("const", literal, i + 1, value))
            i = end
        elif char in "'\"":
            value, end = _read_string(text, i)
            tokens.append(_Token("const", text[i:end], i + 1, value))
            i = end
        elif _NAME.match(text, i):
            token, i = _read_name(text, i)
            tokens.append(token)
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise ExpressionError(
                    f"unexpected character {char!r}", i + 1, _MISTAKES.get(char, "")
                )
            tokens.append(_Token("op", op, i + 1))
            i += len(op)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _unexpected(token: _Token) -> ExpressionError:
    if token.kind == "end":
        return ExpressionError("unexpected end of expression", token.column)
    if token.kind == "const" and token.text[0] in "'\"":
        return ExpressionError(f"unexpected string {token.text}", token.column)
    if token.kind == "const" and token.text[0].isdigit():
        return ExpressionError(f"unexpected number {token.text}", token.column)
    return ExpressionError(f"unexpected '{token.text}'", token.column)


class _Parser:
    """Pratt parser over the token list; each nesting level costs two Python frames."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek_op(self) -> str | None:
        token = self.tokens[self.pos]
        return token.text if token.kind == "op" else None

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expr(0)
        if self.tokens[self.pos].kind != "end":
            raise _unexpected(self.tokens[self.pos])
        return node

    def expr(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            column = self.tokens[self.pos].column
            raise ExpressionError(
                "expression nests too deeply", column, f"the limit is {MAX_DEPTH} levels"
            )
        left = self.prefix(min_bp)
        while (op := self.peek_op()) is not None and _INFIX.get(op, 0) > min_bp:
            bp = _INFIX[op]
            token = self.take()
            if op in _COMPARISONS:
                left = Comparison(op, left, self.expr(bp), token.column)
                if (after := self.peek_op()) in _COMPARISONS:
                    column = self.tokens[self.pos].column
                    hint = "comparisons do not chain; write 'a < b and b < c'"
                    raise ExpressionError(f"'{after}' cannot follow a comparison", column, hint)
            elif op in ("and", "or"):
                operands = [left, self.expr(bp)]
                while self.peek_op() == op:
                    self.take()
                    operands.append(self.expr(bp))
                left = Logical(op, tuple(operands), token.column)
            else:
                # One flat node per run (a + b - c + ...), so long sums stay shallow.
                rest = [(op, token.column, self.expr(bp))]
                while (more := self.peek_op()) is not None and _INFIX.get(more) == bp:
                    column = self.take().column
                    rest.append((more, column, self.expr(bp)))
                left = Arithmetic(left, tuple(rest))
        self.depth -= 1
        return left

    def prefix(self, min_bp: int) -> Node:
        token = self.take()
        if token.kind == "const":
            return Constant(token.value, token.column)
        if token.kind == "ref":
            return Reference(token.path, token.column)
        if token.text == "not" and token.kind == "op":
            if min_bp > _NOT_BP:
                raise ExpressionError("'not' needs parentheses here", token.column, "e.g. (not a)")
            return Unary("not", self.expr(_NOT_BP), token.column)
        if token.text == "-" and token.kind == "op":
            return Unary("-", self.expr(_NEG_BP), token.column)
        if token.text == "(" and token.kind == "op":
            inner = self.expr(0)
            close = self.take()
            if close.text != ")" or close.kind != "op":
                hint = f"the '(' at column {token.column} is not closed"
                raise ExpressionError(
                    f"expected ')', found {close.text or 'the end'}", close.column, hint
                )
            return inner
        raise _unexpected(token)


def parse(text: str) -> Expression:
    """Parse a `when` expression; raise ExpressionError (with a column) if it is not valid."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}", 1)
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Expression:
    # Memoised: expressions are immutable, and loading and planning both parse each `when`.
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}", 1)
    if len(text) > MAX_LENGTH:
        hint = f"the limit is {MAX_LENGTH} characters"
        raise ExpressionError(
            f"expression is too long ({len(text)} characters)", MAX_LENGTH + 1, hint
        )
    tokens = _tokenize(text)
    if len(tokens) == 1:
        raise ExpressionError("empty expression", 1)
    root = _Parser(tokens).parse()
    for node, depth in _walk(root):
        if depth > MAX_DEPTH:
            column = node.rest[0][1] if isinstance(node, Arithmetic) else node.column
            raise ExpressionError(
                "expression nests too deeply", column, f"the limit is {MAX_DEPTH} levels"
            )
    return Expression(text, root)


def _unknown(kind: str, name: str, known: Collection[str], dotted: str) -> str:
    message = f"unknown {kind} '{name}' in {dotted}"
    head = name.split("-", 1)[0]
    if "-" in name and head in known and dotted.endswith(name):
        return f"{message} (to subtract, put spaces around '-': {dotted.replace(name, head)} - ...)"
    return message + _suggest(name, known)


def _check_step(path: tuple[str, ...], dotted: str, prefix: str, steps: Collection[str]) -> str:
    if not path:
        return f"incomplete reference {dotted}: write {prefix}.<step>.status or .metrics.<key>"
    name, fields = path[0], path[1:]
    if name not in steps:
        return _unknown("step", name, steps, dotted)
    shape = f"{prefix}.{name}.status or {prefix}.{name}.metrics.<key>"
    if not fields:
        return f"incomplete reference {dotted}: write {shape}"
    if fields[0] == "status":
        return "" if len(fields) == 1 else f"malformed reference {dotted}: write {shape}"
    if fields[0] == "metrics":
        return "" if len(fields) > 1 else f"incomplete reference {dotted}: write {dotted}.<key>"
    suggestion = _suggest(fields[0], ("status", "metrics"))
    return f"unknown field '{fields[0]}' in {dotted}{suggestion}: write {shape}"


def _check_path(
    path: tuple[str, ...], steps: Collection[str], params: Collection[str], roots: Collection[str]
) -> str:
    dotted, root, rest = ".".join(path), path[0], path[1:]
    if root not in roots:
        starts = [r if r == "baseline" else f"{r}." for r in roots] or ["nothing"]
        allowed = " or ".join(filter(None, (", ".join(starts[:-1]), starts[-1])))
        return f"'{root}' cannot be used here ({dotted}): references here start with {allowed}"
    if root == "params":
        if len(rest) != 1:
            return f"malformed reference {dotted}: write params.<name>"
        return "" if rest[0] in params else _unknown("param", rest[0], params, dotted)
    if root == "steps":
        return _check_step(rest, dotted, "steps", steps)
    if root == "baseline":
        if not rest:
            return ""
        if rest[0] != "steps":
            return f"malformed reference {dotted}: write baseline or baseline.steps.<step>..."
        return _check_step(rest[1:], dotted, "baseline.steps", steps)
    return "" if rest else f"incomplete reference {dotted}: write {root}.<name>"


def check(
    expr: Expression,
    *,
    steps: Collection[str],
    params: Collection[str],
    roots: Collection[str] = ("params", "steps", "baseline", "trigger"),
) -> list[str]:
    """Messages, in source order, for references to unknown roots, steps or params or of a
    malformed shape; an empty list means every reference is fine."""
    refs = sorted(
        (n for n, _ in _walk(expr.root) if isinstance(n, Reference)), key=lambda r: r.column
    )
    messages: list[str] = []
    for ref in refs:
        message = _check_path(ref.path, steps, params, tuple(roots))
        if message and message not in messages:
            messages.append(message)
    return messages


def _type_name(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _is_number(value: Value) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truthy(value: Value) -> bool:
    return value is not None and value is not False and value != 0 and value != ""


def _resolve(node: Reference, context: Mapping[str, Any]) -> Value:
    if node.path == ("baseline",):
        return context.get("baseline") is not None
    value: Any = context
    for segment in node.path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    if value is None or isinstance(value, str | int | float):
        return value
    kind = "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    dotted = ".".join(node.path)
    raise ExpressionError(f"{dotted} is {kind}, not a single value", node.column)


def _arith(op: str, left: Value, right: Value, column: int) -> Value:
    if left is None or right is None:
        return None
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_is_number(left) and _is_number(right)):
        verb = _VERBS[op]
        raise ExpressionError(f"cannot {verb} {_type_name(left)} and {_type_name(right)}", column)
    try:
        result: int | float = _ARITH[op](left, right)
        return result
    except ZeroDivisionError:
        return None
    except OverflowError:
        raise ExpressionError("number too large", column) from None


def _compare(op: str, left: Value, right: Value, column: int) -> bool:
    if op in ("==", "!="):
        # Python's True == 1 must not leak: booleans equal only booleans.
        same = isinstance(left, bool) == isinstance(right, bool) and left == right
        return same if op == "==" else not same
    if left is None or right is None:
        return False
    if not (_is_number(left) and _is_number(right)) and not (
        isinstance(left, str) and isinstance(right, str)
    ):
        raise ExpressionError(f"cannot compare {_type_name(left)} and {_type_name(right)}", column)
    return bool(_ORDER[op](left, right))


def _value(node: Node, context: Mapping[str, Any]) -> Value:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Reference):
        return _resolve(node, context)
    if isinstance(node, Unary):
        value = _value(node.operand, context)
        if node.op == "not":
            return not _truthy(value)
        if value is None or _is_number(value):
            return value if value is None else -value
        raise ExpressionError(f"cannot negate {_type_name(value)}", node.column)
    if isinstance(node, Arithmetic):
        result = _value(node.first, context)
        for op, column, operand in node.rest:
            result = _arith(op, result, _value(operand, context), column)
        return result
    if isinstance(node, Comparison):
        left = _value(node.left, context)
        return _compare(node.op, left, _value(node.right, context), node.column)
    stop = node.op == "or"  # `or` stops at the first true operand, `and` at the first false
    return stop if any(_truthy(_value(o, context)) == stop for o in node.operands) else not stop


def evaluate(expr: Expression, context: Mapping[str, Any]) -> Any:
    """The expression's value (None, bool, int, float or str) over a context of plain dicts."""
    return _value(expr.root, context)


def holds(expr: Expression, context: Mapping[str, Any]) -> bool:
    """Whether the expression's value is truthy (not null, false, 0 or "")."""
    return _truthy(_value(expr.root, context))
