"""Check pipeline files, draw a pipeline's DAG, describe the file format."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
from engine.core.expand import expand
from engine.core.fanout import param_name
from engine.core.graph import Fan
from engine.core.graph_render import render
from engine.core.parse import LoadedPipeline
from engine.core.spec import FanOut, Pipeline
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


def graph(
    loaded: LoadedPipeline,
    fmt: str,
    *,
    expand_steps: bool = False,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The DAG as the file reads it; a fanned-out step with its instance count for
    `params` (default: the pipeline's), or, `expand_steps`, with each of its instances."""
    where = {step.name: (step.runs_on, step.environment) for step in loaded.steps}
    return render(loaded.dag, fmt, where, fans=fans(loaded, params), expand=expand_steps)


def fans(loaded: LoadedPipeline, params: Mapping[str, Any] | None = None) -> dict[str, Fan]:
    """Each fanned-out step: its instances for `params` (default: the pipeline's), and the
    list params that set how many there are. Raises FanOutError (exit 2) for params that
    make an empty or too big fan-out."""
    templates = {step.name: step.fanout for step in loaded.steps if step.fanout is not None}
    if not templates:
        return {}
    given = dict(loaded.pipeline.params) if params is None else dict(params)
    run = expand(loaded, given)
    return {
        step.name: Fan(step.instances, _over(templates[step.name]))
        for step in run.steps
        if step.is_group and step.name in templates
    }


def _over(spec: FanOut) -> str:
    """`foreach params.regions`, `matrix params.rates, params.depths`: the list params that
    set how many instances there are, or ''."""
    if isinstance(spec.foreach, str):
        return f"foreach params.{param_name(spec.foreach)}"
    axes = spec.matrix.axes if spec.matrix is not None else {}
    named = [f"params.{param_name(value)}" for value in axes.values() if isinstance(value, str)]
    return f"matrix {', '.join(named)}" if named else ""


def schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files."""
    document = Pipeline.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "title": "Sluice pipeline",
    }
