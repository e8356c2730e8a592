"""A job's `strategy` as GitHub expands it: the matrix (vectors as written or from an
expression such as `fromJSON(needs.plan.outputs.x)`), `include`/`exclude`, `fail-fast`
(default true) and `max-parallel`; each combination's `matrix` and `strategy` contexts and
its display name; the matrix job's result as its dependents see it.

GitHub evaluates `strategy` after the job's `if:` and with the same contexts (github, needs,
vars, inputs: never `matrix`); an expansion error (an empty vector, no vector, over 256
combinations, a vector that is not a list) fails the job with "Error when evaluating
'strategy' for job '<id>'", which fails the run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .expressions import Evaluator, ExpressionError, split_template

MAX_COMBINATIONS = 256  # GitHub: a matrix makes at most 256 jobs per workflow run
JOB_LEVEL = ("github", "needs", "vars", "inputs")  # what a job's `if`/`strategy` may read
NAME_LEVEL = (*JOB_LEVEL, "strategy", "matrix")  # a job's `name` and `runs-on`


class MatrixError(Exception):
    """A strategy GitHub cannot expand: the job fails with this message."""


@dataclass(frozen=True)
class Strategy:
    combinations: tuple[dict[str, Any], ...]
    fail_fast: bool
    max_parallel: int  # the combinations at most running at once (default: all of them)

    def context(self, index: int) -> dict[str, Any]:
        """The `strategy` context of combination `index`."""
        return {
            "fail-fast": self.fail_fast,
            "job-index": index,
            "job-total": len(self.combinations),
            "max-parallel": self.max_parallel,
        }


def _value(evaluator: Evaluator, raw: Any, contexts: Mapping[str, Any]) -> Any:
    """A value as written, or the value of the one expression it is (`${{ x }}`)."""
    if isinstance(raw, str) and "${{" in raw:
        parts = split_template(raw)
        if len(parts) == 1 and parts[0][1] is not None:
            return evaluator.evaluate(parts[0][1], contexts, named=JOB_LEVEL).value
        return evaluator.template(raw, contexts)
    if isinstance(raw, list):
        return [_value(evaluator, item, contexts) for item in raw]
    if isinstance(raw, dict):
        return {key: _value(evaluator, item, contexts) for key, item in raw.items()}
    return raw


def _matches(combination: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(key in combination and combination[key] == value for key, value in entry.items())


def combinations(matrix: Any) -> list[dict[str, Any]]:
    """GitHub's expansion of an evaluated matrix: the cross product of its vectors (the
    first varying slowest), minus each `exclude` (a partial match), then each `include`
    entry added to every combination whose original values it matches without overwriting
    one, or appended as a combination of its own when it extends none."""
    if not isinstance(matrix, dict):
        raise MatrixError(f"Unexpected value {json.dumps(matrix)}: a matrix is a mapping")
    include = matrix.get("include") or []
    exclude = matrix.get("exclude") or []
    for key, entries in (("include", include), ("exclude", exclude)):
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise MatrixError(f"Matrix {key} must be a sequence of mappings")
    vectors = {key: value for key, value in matrix.items() if key not in ("include", "exclude")}
    for key, value in vectors.items():
        if not isinstance(value, list):
            raise MatrixError(f"Matrix vector '{key}' must be a sequence, not {json.dumps(value)}")
        if not value:
            raise MatrixError(f"Matrix vector '{key}' does not contain any values")
    if not vectors and not include:
        raise MatrixError("Matrix must define at least one vector")
    keys = list(vectors)
    found = [
        dict(zip(keys, values, strict=True)) for values in itertools.product(*vectors.values())
    ]
    found = [c for c in found if not any(_matches(c, e) for e in exclude)] if vectors else []
    originals = [dict(c) for c in found]  # an include extends only these, never its own
    added: list[dict[str, Any]] = []
    for entry in include:
        extended = False
        for combination, original in zip(found, originals, strict=True):
            own = {k: v for k, v in entry.items() if k in original}
            if all(original[k] == v for k, v in own.items()):
                combination.update({k: v for k, v in entry.items() if k not in original})
                extended = True
        if not extended:
            added.append(dict(entry))
    found += added
    if not found:
        raise MatrixError("Matrix must define at least one vector")  # all excluded
    if len(found) > MAX_COMBINATIONS:
        raise MatrixError(
            f"Strategy expands to {len(found)} jobs: a matrix makes at most {MAX_COMBINATIONS}"
        )
    return found


def expand(
    evaluator: Evaluator, job_id: str, strategy: Mapping[str, Any], contexts: Mapping[str, Any]
) -> Strategy:
    """`strategy` (as written) evaluated with the job-level `contexts`; MatrixError with
    GitHub's words when it cannot be expanded."""
    try:
        matrix = _value(evaluator, strategy["matrix"], contexts)
        found = combinations(matrix)
        fail_fast = _value(evaluator, strategy.get("fail-fast", True), contexts)
        most = _value(evaluator, strategy.get("max-parallel", len(found)), contexts)
        fail_fast = fail_fast if isinstance(fail_fast, bool) else str(fail_fast) == "true"
        most = int(most)
        if most < 1:
            raise MatrixError(f"max-parallel must be at least 1, not {most}")
    except (ExpressionError, MatrixError, ValueError) as exc:
        raise MatrixError(f"Error when evaluating 'strategy' for job '{job_id}'. {exc}") from exc
    return Strategy(tuple(found), fail_fast, min(most, len(found)))


def shown(value: Any) -> str:
    """A matrix value as a job's display name shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def display_name(evaluator: Evaluator, job_id: str, name: Any, contexts: Mapping[str, Any]) -> str:
    """A combination's name: its job's `name:` evaluated with its `matrix` when the name
    reads it, else the name (or the job id) followed by its values in parentheses."""
    if isinstance(name, str) and "${{" in name and "matrix" in name:
        return evaluator.template(name, contexts)
    base = evaluator.template(name, contexts) if name is not None else job_id
    values = ", ".join(shown(v) for v in contexts["matrix"].values())
    return f"{base} ({values})"


def result(results: list[str]) -> str:
    """A matrix job's result for `needs.<job>.result`: failure when a combination failed,
    else cancelled when one was cancelled, else success."""
    if "failure" in results:
        return "failure"
    if "cancelled" in results:
        return "cancelled"
    return "success"
