"""Text -> validated pipeline (or `sluice.yaml` settings), every problem as `file:line: message`.

Pure: the files themselves are found and read by engine.adapters.pipeline_files. The YAML
parser, the semantic checks and the schema messages load when a text is parsed: a pipeline
taken from the pipeline cache needs none of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engine.core.graph import Dag
from engine.core.lines import LineMap
from engine.core.spec import Pipeline, RepoConfig, ResolvedStep
from engine.errors import NotFound, PipelineInvalid, Problem

MAX_FILE_BYTES = 16 * 1024**2


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline with everything the planner and executor need."""

    pipeline: Pipeline
    file: str  # as shown to users (relative to the repo when possible)
    sha256: str
    steps: tuple[ResolvedStep, ...]
    dag: Dag
    lines: LineMap
    expanded: bool = False  # fan-out steps made into instances for one run (core/fanout.py)

    @property
    def name(self) -> str:
        return self.pipeline.name

    def step(self, name: str) -> ResolvedStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise NotFound(f"pipeline {self.name!r} has no step {name!r}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_text(text: str, file: str = "<string>") -> LoadedPipeline:
    """Parse and validate one pipeline document. Raises PipelineInvalid with every problem."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise PipelineInvalid(
            [Problem(file, line, "not valid Unicode text (a lone surrogate)")]
        ) from None
    if size > MAX_FILE_BYTES:
        raise PipelineInvalid([Problem(file, 1, f"the file is larger than {MAX_FILE_BYTES} bytes")])
    from engine.core import checks  # lazy: the checks (croniter) only when a text is parsed
    from engine.core.schema_problems import type_name, validation_problems  # lazy: as above
    from engine.core.yaml_lines import compose  # lazy: the YAML parser, as above

    data, lines, problems = compose(text, file)
    if data is None and problems:
        raise PipelineInvalid(problems)
    if not isinstance(data, dict):
        raise PipelineInvalid(
            [
                *problems,
                Problem(
                    file,
                    lines.key_line(()),
                    f"a pipeline file is a mapping (name, steps, ...), got {type_name(data)}",
                ),
            ]
        )
    _one_item_needs(data)
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, data, file, lines))
    result = checks.check_pipeline(data, pipeline)
    problems.extend(
        Problem(file, lines.key_line(path), message) for path, message in result.problems
    )
    if problems or pipeline is None or result.dag is None:
        raise PipelineInvalid(problems or [Problem(file, 1, "invalid pipeline")])
    return LoadedPipeline(
        pipeline=pipeline,
        file=file,
        sha256=_sha256(text),
        steps=tuple(result.steps),
        dag=result.dag,
        lines=lines,
    )


def _one_item_needs(data: dict[str, Any]) -> None:
    """`needs: prepare` means `needs: [prepare]`, as a GitHub Actions job's `needs` does."""
    for section in ("steps", "finally"):
        items = data.get(section)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("needs"), str):
                item["needs"] = [item["needs"]]


def decode(raw: bytes, file: str) -> str:
    """The bytes of a file as text; PipelineInvalid when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PipelineInvalid([Problem(file, 1, f"not UTF-8 text (byte {exc.start})")]) from None


def unique_names(loaded: Iterable[LoadedPipeline]) -> list[Problem]:
    """A problem for each pipeline whose name an earlier one already uses."""
    problems: list[Problem] = []
    first_by_name: dict[str, LoadedPipeline] = {}
    for item in loaded:
        other = first_by_name.setdefault(item.name, item)
        if other is not item:
            problems.append(
                Problem(
                    item.file,
                    item.lines.value_line(("name",)),
                    f"pipeline name {item.name!r} is already used by {other.file}; names must be unique",
                )
            )
    return problems


def parse_repo_config(text: str, file: str = "sluice.yaml") -> RepoConfig:
    """`sluice.yaml` settings from its text (empty text: the defaults)."""
    from engine.core.schema_problems import validation_problems  # lazy: see load_text
    from engine.core.yaml_lines import compose  # lazy: see load_text

    data, lines, problems = compose(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PipelineInvalid([*problems, Problem(file, 1, "sluice.yaml is a mapping")])
    try:
        result = RepoConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, data, file, lines, RepoConfig))
        raise PipelineInvalid(problems) from None
    if problems:
        raise PipelineInvalid(problems)
    return result
