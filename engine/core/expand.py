"""A pipeline made ready for one run: its fan-out steps expanded (engine.core.fanout)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.core import graph
from engine.core.fanout import instance_step, instances
from engine.core.parse import LoadedPipeline
from engine.core.spec import ResolvedStep


def expand(loaded: LoadedPipeline, params: Mapping[str, Any]) -> LoadedPipeline:
    """The run's pipeline: each fanned-out step as its instances and its group step.

    A pipeline without fan-out, or one expanded already, comes back as it is.
    Raises FanOutError (exit 2) when params make a fan-out empty or too big.
    """
    if loaded.expanded or not any(s.fanout is not None for s in loaded.steps):
        return loaded
    steps: list[ResolvedStep] = []
    for step in loaded.steps:
        if step.fanout is None:
            steps.append(step)
            continue
        made = instances(step, params)
        steps += [instance_step(step, instance) for instance in made]
        names = tuple(instance.name for instance in made)
        steps.append(step.model_copy(update={"needs": list(names), "instances": names}))
    needs = {s.name: list(s.needs) for s in steps if not s.is_finally}
    final = {s.name: list(s.needs) for s in steps if s.is_finally}
    dag = graph.with_finally(graph.build(needs), final)
    return dataclasses.replace(loaded, steps=tuple(steps), dag=dag, expanded=True)
