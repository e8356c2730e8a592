"""A GitHub workflow file read the way the emulator needs it: jobs, needs, if, name,
strategy, outputs, runs-on, environment, timeout-minutes, env, steps (uses/run/with/env/id/if)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TIMEOUT_MINUTES = 360  # GitHub's default for a job


class WorkflowError(Exception):
    """A workflow the emulator cannot run (GitHub would refuse it too)."""


@dataclass(frozen=True)
class Step:
    index: int
    id: str | None
    name: str | None
    uses: str | None
    run: str | None
    with_: Mapping[str, Any]
    env: Mapping[str, Any]
    if_: Any = None
    shell: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.id or self.uses or (self.run or "").splitlines()[0][:40]


@dataclass(frozen=True)
class Job:
    id: str
    needs: tuple[str, ...]
    if_: Any
    runs_on: tuple[str, ...]
    environment: str | None
    timeout_minutes: Any
    outputs: Mapping[str, Any]
    env: Mapping[str, Any]
    steps: tuple[Step, ...]
    permissions: Any = None
    name: Any = None  # may read `matrix` (a matrix job's name is evaluated per combination)
    strategy: Mapping[str, Any] | None = None  # as written; ghemu.matrix evaluates it

    @property
    def pool(self) -> tuple[str, ...]:
        """The runner label set: the pool this job takes a runner from."""
        return tuple(sorted(self.runs_on))


@dataclass(frozen=True)
class Workflow:
    name: str
    on: Any
    env: Mapping[str, Any]
    jobs: Mapping[str, Job]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def ancestors(self, job: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.jobs[job].needs)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.jobs[name].needs)
        return seen


def _labels(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, dict) and "labels" in value:
        return _labels(value["labels"], where)
    raise WorkflowError(f"{where}: runs-on must be a label or a list of labels, not {value!r}")


def _environment(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return str(value["name"])
    raise WorkflowError(f"{where}: environment must be a name or {{name: ...}}, not {value!r}")


def _step(index: int, raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: a step must be a mapping")
    if ("uses" in raw) == ("run" in raw):
        raise WorkflowError(f"{where}: a step needs exactly one of uses: and run:")
    return Step(
        index=index,
        id=raw.get("id"),
        name=raw.get("name"),
        uses=raw.get("uses"),
        run=raw.get("run"),
        with_=dict(raw.get("with") or {}),
        env=dict(raw.get("env") or {}),
        if_=raw.get("if"),
        shell=raw.get("shell"),
    )


def _strategy(value: Any, where: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "matrix" not in value:
        raise WorkflowError(f"{where}: a strategy is a mapping with matrix:")
    unknown = set(value) - {"matrix", "fail-fast", "max-parallel"}
    if unknown:
        raise WorkflowError(f"{where}: unexpected {', '.join(sorted(map(str, unknown)))}")
    matrix = value["matrix"]
    if not isinstance(matrix, dict | str):
        raise WorkflowError(f"{where}.matrix: a mapping of vectors or an expression")
    return dict(value)


def _job(job_id: str, raw: Any) -> Job:
    where = f"jobs.{job_id}"
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: a job must be a mapping")
    if "uses" in raw:
        raise WorkflowError(f"{where}: reusable workflows are not emulated")
    needs = raw.get("needs", [])
    needs = [needs] if isinstance(needs, str) else list(needs)
    if "runs-on" not in raw:
        raise WorkflowError(f"{where}: runs-on is missing")
    steps = raw.get("steps") or []
    if not steps:
        raise WorkflowError(f"{where}: a job needs steps")
    return Job(
        id=job_id,
        needs=tuple(needs),
        if_=raw.get("if"),
        runs_on=_labels(raw["runs-on"], f"{where}.runs-on"),
        environment=_environment(raw.get("environment"), f"{where}.environment"),
        timeout_minutes=raw.get("timeout-minutes", DEFAULT_TIMEOUT_MINUTES),
        outputs=dict(raw.get("outputs") or {}),
        env=dict(raw.get("env") or {}),
        steps=tuple(_step(i, s, f"{where}.steps[{i}]") for i, s in enumerate(steps)),
        permissions=raw.get("permissions"),
        name=raw.get("name"),
        strategy=_strategy(raw.get("strategy"), f"{where}.strategy"),
    )


def parse(text: str) -> Workflow:
    """The workflow in `text`; WorkflowError when GitHub could not run it either."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise WorkflowError("a workflow is a mapping with jobs:")
    # YAML 1.1 reads the key `on` as True
    on = data.get("on", data.get(True))
    jobs = {str(job_id): _job(str(job_id), raw) for job_id, raw in data["jobs"].items()}
    for job in jobs.values():
        for need in job.needs:
            if need not in jobs:
                raise WorkflowError(f"jobs.{job.id}.needs: no job {need!r}")
    workflow = Workflow(str(data.get("name", "")), on, dict(data.get("env") or {}), jobs, data)
    for job_id in jobs:
        if job_id in workflow.ancestors(job_id):
            raise WorkflowError(f"jobs.{job_id}.needs: a cycle")
    return workflow


def load(path: Path) -> Workflow:
    return parse(path.read_text("utf-8"))
