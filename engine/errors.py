"""The engine's one exception tree; the CLI maps it to exit codes, never to a traceback.

Every error the engine raises on purpose is a SluiceError. Classes defined in another
module name it in brackets; tests/test_errors.py holds this drawing to the code. Errors
carry their facts as fields (`PipelineInvalid.problems` with file and line,
`CycleError.cycle`, `ExpressionError.column`), so that no caller has to parse a message.

SluiceError                 exit 1 unless a subclass says otherwise
├── InvalidInput            exit 2: the user's files, flags, names or payloads are wrong
│   ├── PipelineInvalid     one or more Problems: file, line, message
│   ├── UsageError          a flag, argument or reference that does not fit
│   ├── NotFound            a named pipeline, run, step or file does not exist
│   ├── ActionError         the Action's inputs cannot make a command
│   ├── CycleError          [core.graph] `needs` form a cycle, listed in `cycle`
│   ├── ExpressionError     [core.expressions] a `when` that does not parse or evaluate
│   ├── FanOutError         [core.fanout] a matrix or list that makes no or too many instances
│   └── DataError           [adapters.drift_tables] a data file drift cannot compare
├── EngineUnavailable       exit 3: the engine could not run (Docker, git, the artifact store)
│   ├── RuntimeUnavailable  [ports] the Docker daemon does not answer
│   └── ResultsNotPushed    [adapters.git_results] committed here, refused by the remote
├── ImageMissing            [ports] an image that is not there and cannot be pulled or built
│   └── ImageBuildFailed    [adapters.docker_runtime] building a step's image failed
├── ClaimLost               another runner created a claimed path first
├── UnsafeArchive           [local.archives] an archive that writes where it must not
├── CorruptArtifact         [adapters.artifacts] a stored object missing or not matching
├── DispatchFailed          [adapters.github_api] GitHub did not accept a dispatch
├── DispatchLoop            [adapters.github_api] a dispatch chain already too deep
└── CommentFailed           [adapters.github_comments] a pull request's comment not posted
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
    """A named pipeline, run, step or file does not exist (a wrong name is wrong input)."""


class ActionError(InvalidInput):
    """The Action's inputs cannot make a command: it exits 2 with an error annotation."""


class EngineUnavailable(SluiceError):
    """Something the engine needs (Docker, git, an artifact store) cannot be reached."""

    exit_code = 3


class ClaimLost(SluiceError):
    """A path the commit needed to be absent is already on the results branch."""

    def __init__(self, path: str, branch: str) -> None:
        super().__init__(f"{path} already exists on {branch}: another runner claimed it first")
        self.path = path


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
