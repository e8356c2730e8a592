"""The engine's one exception tree; the CLI maps it to exit codes, never to a traceback.

SluiceError                 exit 1 unless a subclass says otherwise
├── InvalidInput            exit 2: the user's files, flags or payloads are wrong
│   ├── PipelineInvalid     one or more `file:line: message` problems
│   └── UsageError          a flag, argument or reference that does not fit
├── NotFound                exit 2: a named pipeline, run or step does not exist
└── EngineUnavailable       exit 1: Docker, git or a store cannot be reached
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, located by line (1-based; 0 when unknown)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "message": self.message}


class SluiceError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InvalidInput(SluiceError):
    """The user's input is wrong: nothing was run."""

    exit_code = 2


class PipelineInvalid(InvalidInput):
    """Pipeline or config files failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class UsageError(InvalidInput):
    """A command-line argument or reference that does not fit."""


class NotFound(InvalidInput):
    """A named pipeline, run, step or file does not exist."""


class EngineUnavailable(SluiceError):
    """Something the engine needs (Docker, git, an artifact store) cannot be reached."""


def json_object(
    value: Any,
    what: str,
    *,
    example: str,
    error: Callable[[str], Exception] = InvalidInput,
) -> dict[str, Any]:
    """`value`, or the JSON text it is, as a JSON object; otherwise `error` naming `what`.

    >>> json_object('{"n": 3}', "--payload", example="{}")
    {'n': 3}
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, e.g. {example}")
    return value
