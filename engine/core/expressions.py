"""The safe `when:` expression language: its syntax tree, tokenizer and Pratt parser.

Nothing is ever handed to Python's eval/exec/compile; the text is tokenized and parsed into
frozen dataclasses and evaluated by walking them. Semantics, briefly:

- Values are null, booleans, numbers (int or float) and strings. A reference is a dotted
  path from a root (params, steps, baseline, trigger, metrics, matrix) walked through the
  context's nested mappings; a missing key anywhere on the path (no such metric, no baseline,
  a step that did not run) gives null. `baseline` alone is true iff context["baseline"] is
  not None. A path that ends at a mapping or list is an error: only single values compare.
- `matrix.<key>` is a fanned-out step's own value (context["matrix"]).
- A segment after the root may contain hyphens (`steps.validate-data.status`), so subtracting
  from a reference needs spaces: `params.a - 1`, not `params.a-1`.
- A `*` segment, right after `instances`, maps the rest of the path over each item of that
  list (`steps.train.instances.*.metrics.auc`: one value per instance; a missing list is
  empty). Such a list of values, or `steps.<step>.instances` itself in count(), may appear
  only as the one argument of an aggregate, and an aggregate's argument is only that:
  max(x)/min(x) of the non-null values (numbers only; null if none), count(x) the non-null
  values (of a bare list, its items), all(x)/any(x) their truthiness (all of none is true,
  any of none false). These five words are functions only right before `(`.
- Arithmetic: null in, null out; division or remainder by zero gives null; `+` also joins two
  strings; any other non-number operand (booleans included) is an error.
- `==`/`!=` never fail (null == null is true; true == 1 is false). Ordering (< <= > >=) with
  null is false; numbers order with numbers, strings with strings, anything else is an error.
- Truthiness: null, false, 0 and "" are false. `and`/`or` short-circuit; they and `not` give
  booleans. Precedence, lowest first: or; and; not; comparisons (not chainable); + -; * / %;
  unary -; parentheses and calls.
- Every failure, in parsing or evaluating, is an ExpressionError carrying a 1-based column.

engine.core.expression_eval checks an expression's references and evaluates it
(engine.core.expression_aggregates: the aggregates).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from engine.core.expression_tree import (
    FUNCTIONS,
    WILDCARD,
    Arithmetic,
    Call,
    Comparison,
    Constant,
    Expression,
    ExpressionError,
    Logical,
    Node,
    Reference,
    Unary,
    Value,
    walk,
)
from engine.core.suggest import suggest

__all__ = [  # the syntax tree lives in engine.core.expression_tree; callers import it here
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "ROOTS",
    "WILDCARD",
    "Arithmetic",
    "Call",
    "Comparison",
    "Constant",
    "Expression",
    "ExpressionError",
    "Logical",
    "Node",
    "Reference",
    "Unary",
    "Value",
    "parse",
    "walk",
]

MAX_LENGTH = 4096
MAX_DEPTH = 64  # nesting levels; keeps parser and evaluator far below Python's recursion limit
ROOTS = ("params", "steps", "baseline", "trigger", "metrics", "matrix")

_CONSTANTS: dict[str, Value] = {"true": True, "false": False, "null": None}
_WORDS = ("and", "or", "not")
_SPACE = re.compile(r"[ \t\r\n]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",")
_MISTAKES = {"=": "use '==' to compare", "!": "use 'not'", "&": "use 'and'", "|": "use 'or'"}
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_INFIX = {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_INFIX.update(dict.fromkeys(_COMPARISONS, 4))
_NOT_BP = 3
_NEG_BP = 7


@dataclass(frozen=True)
class _Token:
    kind: str  # "op" (operators, parentheses, and/or/not), "const", "ref", "func" or "end"
    text: str
    column: int
    value: Value = None
    path: tuple[str, ...] = ()


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
        space = _SPACE.match(text, i)
        if text.startswith("(", space.end() if space else i):
            if word in FUNCTIONS:
                return _Token("func", word, start + 1), i
            hint = "the functions are " + ", ".join(FUNCTIONS) + suggest(word.lower(), FUNCTIONS)
            raise ExpressionError(f"unknown function '{word}'", start + 1, hint)
        if word in FUNCTIONS:
            hint = f"{word} is a function: write {word}(steps.<step>.instances.*.<field>)"
            raise ExpressionError(f"'{word}' needs '(' after it", start + 1, hint)
        hint = "references start with params., steps., baseline, trigger., metrics. or matrix."
        suggestion = suggest(word.lower(), (*ROOTS, *_CONSTANTS, *_WORDS))
        raise ExpressionError(f"unknown name '{word}'", start + 1, hint + suggestion)
    path = [word]
    while i < len(text) and text[i] == ".":
        if text.startswith(WILDCARD, i + 1):
            i = _wildcard(text, i + 1, path)
            continue
        segment = _SEGMENT.match(text, i + 1)
        if segment is None:
            raise ExpressionError("expected a name after '.'", i + 2)
        if segment.group().startswith("__"):
            # Paths are only ever looked up in mappings, but dunder names are never meant.
            raise ExpressionError(f"name '{segment.group()}' is not allowed", i + 2)
        path.append(segment.group())
        i = segment.end()
    return _Token("ref", text[start:i], start + 1, path=tuple(path)), i


def _wildcard(text: str, at: int, path: list[str]) -> int:
    """Append the `*` at text[at] to `path`; where the reference goes on."""
    example = "e.g. steps.train.instances.*.metrics.auc"
    if path[-1] != "instances" or len(path) < 2:
        raise ExpressionError("'*' can only follow 'instances'", at + 1, example)
    if WILDCARD in path:
        raise ExpressionError("a reference can have only one '*'", at + 1)
    if not text.startswith(".", at + 1):
        hint = "write *.status, *.name, *.metrics.<key> or *.matrix.<key>"
        raise ExpressionError("expected '.' and a field after '*'", at + 2, hint)
    path.append(WILDCARD)
    return at + 1


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
        if token.kind == "func":
            return self.call(token)
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

    def call(self, function: _Token) -> Call:
        name, example = function.text, "steps.train.instances.*.metrics.auc"
        opening = self.take()  # the tokenizer saw the '('
        if self.peek_op() == ")":
            column = self.tokens[self.pos].column
            raise ExpressionError(f"{name}() needs one argument", column, f"e.g. {name}({example})")
        first = self.tokens[self.pos]
        argument = self.expr(0)
        close = self.take()
        if close.text == "," and close.kind == "op":
            raise ExpressionError(f"{name}() takes one argument", close.column)
        if close.text != ")" or close.kind != "op":
            hint = f"the '(' at column {opening.column} is not closed"
            raise ExpressionError(
                f"expected ')', found {close.text or 'the end'}", close.column, hint
            )
        if not isinstance(argument, Reference):
            hint = f"e.g. {name}({example})"
            raise ExpressionError(
                f"the argument of {name}() must be a reference", first.column, hint
            )
        path = argument.path
        if WILDCARD not in path and not (name == "count" and path[-1] == "instances"):
            hint = f"e.g. {name}({example})" + (
                " or count(steps.train.instances)" if name == "count" else ""
            )
            message = f"{name}() needs a list, and {'.'.join(path)} is a single value"
            raise ExpressionError(message, argument.column, hint)
        return Call(name, argument, function.column)


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
    arguments: set[int] = set()  # the ids of aggregates' arguments: where lists may be
    for node, depth in walk(root):
        if depth > MAX_DEPTH:
            column = node.rest[0][1] if isinstance(node, Arithmetic) else node.column
            raise ExpressionError(
                "expression nests too deeply", column, f"the limit is {MAX_DEPTH} levels"
            )
        if isinstance(node, Call):
            arguments.add(id(node.argument))
        elif isinstance(node, Reference) and WILDCARD in node.path and id(node) not in arguments:
            dotted = ".".join(node.path)
            hint = f"use it inside {', '.join(FUNCTIONS[:-1])} or {FUNCTIONS[-1]}: max({dotted})"
            raise ExpressionError(f"{dotted} is a list (a value per item)", node.column, hint)
    return Expression(text, root)
