"""Check pipeline files, draw a pipeline's DAG, describe the file format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
from engine.core.graph import render
from engine.core.parse import LoadedPipeline
from engine.core.spec import Pipeline
from engine.errors import PipelineInvalid, Problem


def validate(repo: Path, targets: list[Path]) -> tuple[list[LoadedPipeline], list[Problem]]:
    """Every pipeline file under `targets` loaded; the sound ones and every problem, sorted."""
    files: list[Path] = []
    problems: list[Problem] = []
    for target in targets:
        found = find_pipeline_files(target)
        if not found:
            what = (
                "no such file or folder" if not target.exists() else "no *.yaml pipeline files here"
            )
            problems.append(Problem(display_path(target, repo), 0, what))
        files.extend(found)
    loaded: list[LoadedPipeline] = []
    try:
        loaded = load_many(files, repo)
    except PipelineInvalid as exc:
        problems.extend(exc.problems)
    return loaded, sorted(set(problems))


def graph(loaded: LoadedPipeline, fmt: str) -> str:
    where = {step.name: (step.runs_on, step.environment) for step in loaded.steps}
    return render(loaded.dag, fmt, where)


def schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files."""
    document = Pipeline.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "title": "Sluice pipeline",
    }
