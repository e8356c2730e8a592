"""GitHub expressions, evaluated by GitHub's own evaluator (@actions/expressions, in Node).

One long-lived `node tests/ghemu/expressions.mjs` child speaks JSON lines; the status
functions (success, failure, cancelled, always) get the values the emulator decides by
GitHub's rules. `${{ }}` templates are split here, each expression evaluated there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULES = HERE.parent / "node" / "node_modules"
STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")


class ExpressionError(Exception):
    """An expression GitHub would refuse (a parse error, an unknown context or function)."""


@dataclass(frozen=True)
class Status:
    """What the status functions answer where an expression is evaluated."""

    success: bool = True
    failure: bool = False
    cancelled: bool = False

    def as_json(self) -> dict[str, bool]:
        return {"success": self.success, "failure": self.failure, "cancelled": self.cancelled}


@dataclass(frozen=True)
class Value:
    """An evaluated expression: its plain JSON value, GitHub's string of it, its truth."""

    value: Any
    string: str
    truthy: bool
    status_functions: tuple[str, ...]


def available() -> str | None:
    """Why the evaluator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (bash scripts/node-tools.sh)"
    if not (MODULES / "@actions" / "expressions" / "package.json").exists():
        return "@actions/expressions is not installed (bash scripts/node-tools.sh)"
    return None


@dataclass
class Evaluator:
    """A node child evaluating expressions; thread-safe (one request at a time)."""

    process: subprocess.Popen[str]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    @classmethod
    def start(cls) -> Evaluator:
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        process = subprocess.Popen(
            ["node", str(HERE / "expressions.mjs"), str(MODULES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        return cls(process)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def evaluate(
        self,
        expr: str,
        contexts: Mapping[str, Any],
        status: Status | None = None,
        *,
        condition: bool = False,
        named: tuple[str, ...] | None = None,
    ) -> Value:
        """`expr` (no `${{ }}`) evaluated with `contexts` (plain JSON) and `status`;
        `condition`: as an `if:` (`success() && (expr)` unless it names a status function);
        `named`: the only contexts it may name (GitHub's per-key lists), else all of them."""
        with self._lock:
            self._next += 1
            request = {
                "id": self._next,
                "expr": expr,
                "contexts": contexts,
                "status": (status or Status()).as_json(),
                "condition": condition,
            }
            if named is not None:
                request["named"] = list(named)
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the expression evaluator exited ({self.process.poll()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise ExpressionError(f"{expr!r}: {answer['error']}")
        return Value(
            answer["value"], answer["string"], answer["truthy"], tuple(answer["status_functions"])
        )

    def condition(
        self,
        text: str | bool | None,
        contexts: Mapping[str, Any],
        status: Status,
        named: tuple[str, ...] | None = None,
    ) -> bool:
        """An `if:` as GitHub decides it: `${{ }}` optional; without a status function the
        condition is `success() && (cond)`; none at all is `success()`."""
        if text is None:
            return status.success and not status.cancelled
        if isinstance(text, bool):
            return text and status.success and not status.cancelled
        expr = str(text).strip()
        if expr.startswith("${{") and expr.endswith("}}") and expr.count("${{") == 1:
            expr = expr[3:-2].strip()
        return self.evaluate(expr, contexts, status, condition=True, named=named).truthy

    def template(self, text: Any, contexts: Mapping[str, Any], status: Status | None = None) -> str:
        """A value with `${{ }}` parts replaced by their strings, as GitHub fills `with:`,
        `env:`, `outputs:` and `run:`. Non-strings (YAML numbers, booleans) become strings."""
        if isinstance(text, bool):
            return "true" if text else "false"
        if not isinstance(text, str):
            return "" if text is None else str(text)
        out: list[str] = []
        for literal, expr in split_template(text):
            if expr is None:
                out.append(literal)
                continue
            value = self.evaluate(expr, contexts, status)
            if isinstance(value.value, dict | list):
                raise ExpressionError(
                    f"${{{{ {expr} }}}} is an {'object' if isinstance(value.value, dict) else 'array'}"
                    " where a string is expected (GitHub: 'A mapping was not expected')"
                )
            out.append(value.string)
        return "".join(out)


def split_template(text: str) -> list[tuple[str, str | None]]:
    """`"a ${{ x }} b"` -> [("a ", None), ("", "x"), (" b", None)]: string literals inside
    an expression (single quotes, '' escapes) may hold `}}`."""
    parts: list[tuple[str, str | None]] = []
    at = 0
    while (start := text.find("${{", at)) != -1:
        if start > at:
            parts.append((text[at:start], None))
        i, quoted = start + 3, False
        while i < len(text):
            if text[i] == "'":
                quoted = not quoted
            elif not quoted and text.startswith("}}", i):
                break
            i += 1
        else:
            raise ExpressionError(f"unclosed ${{{{ in {text!r}")
        parts.append(("", text[start + 3 : i].strip()))
        at = i + 2
    if at < len(text):
        parts.append((text[at:], None))
    return parts
