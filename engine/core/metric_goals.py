"""Which way each metric should move: declared in the pipeline, or read off its `when` gates.

A metric's key is `<step>.<metric>` (`evaluate.roc_auc`). A gate that reads
`steps.evaluate.metrics.roc_auc >= baseline.steps.evaluate.metrics.roc_auc - 0.02` lets a
model through when roc_auc is high enough: higher is better. `<=` and `<` say lower is
better; a reference to the baseline (or a constant) on the left of the operator flips the
reading. A metric compared both ways gets no direction, and neither does one only compared
with `==`/`!=`. The pipeline's `metrics:` (`{evaluate.roc_auc: higher}`, or a bare metric
name for every step's metric of that name) wins over anything inferred.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

from engine.core.expressions import Arithmetic, Comparison, Node, Reference, Unary, parse, walk
from engine.core.spec import Pipeline, StepType
from engine.errors import InvalidInput

Direction: TypeAlias = Literal["higher", "lower"]
_UP = {">=": True, ">": True, "<=": False, "<": False}
_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}


def directions(pipeline: Pipeline) -> dict[str, Direction]:
    """Every metric's preferred direction the pipeline states, declared ones first.

    >>> from engine.core.parse import load_text
    >>> p = load_text('''
    ... name: p
    ... baseline: {step: deploy}
    ... defaults: {image: i}
    ... steps:
    ...   - {name: evaluate, run: x}
    ...   - name: deploy
    ...     type: deployment
    ...     needs: [evaluate]
    ...     run: x
    ...     when: "steps.evaluate.metrics.auc >= baseline.steps.evaluate.metrics.auc - 0.02
    ...            and baseline.steps.evaluate.metrics.rmse > steps.evaluate.metrics.rmse"
    ... ''').pipeline
    >>> directions(p)
    {'evaluate.auc': 'higher', 'evaluate.rmse': 'lower'}
    >>> directions(p.model_copy(update={"metrics": {"rmse": "higher"}}))  # `metrics:` declared
    {'rmse': 'higher', 'evaluate.auc': 'higher'}
    """
    declared: dict[str, Direction] = dict(pipeline.metrics)
    kept = {
        key: value
        for key, value in inferred(pipeline).items()
        if key not in declared and key.split(".", 1)[-1] not in declared
    }
    return {**declared, **kept}


def inferred(pipeline: Pipeline) -> dict[str, Direction]:
    """Directions read off the steps' `when`s: deployment gates first, then the others."""
    steps = sorted(pipeline.all_steps, key=lambda s: s.type != StepType.deployment)
    seen: dict[str, set[bool]] = {}
    rank: dict[str, tuple[bool, bool, int]] = {}  # gate metrics held against production first
    for step in steps:
        when = step.when if step.when is not None else pipeline.defaults.when
        if not when or "${{" in when:
            continue
        try:
            expression = parse(when)
        except InvalidInput:  # validation reports it; here it just says nothing
            continue
        for node, _ in walk(expression.root):
            if isinstance(node, Comparison) and node.op in _UP:
                for key, higher in _readings(node):
                    seen.setdefault(key, set()).add(higher)
                    place = (step.type != StepType.deployment, not _baseline(node), len(rank))
                    rank[key] = min(rank.get(key, place), place)
    kept = sorted((key for key, ups in seen.items() if len(ups) == 1), key=rank.__getitem__)
    return {key: "higher" if seen[key] == {True} else "lower" for key in kept}


def _baseline(node: Comparison) -> bool:
    """Whether the comparison reads the production run (`baseline.steps...`)."""
    return any(isinstance(part, Reference) and part.path[0] == "baseline" for part, _ in walk(node))


def _readings(node: Comparison) -> list[tuple[str, bool]]:
    """(metric key, higher is better) for each current-run metric the comparison bounds."""
    found = []
    for side, op in ((node.left, node.op), (node.right, _FLIP[node.op])):
        key = _metric(side)
        if key is not None:
            found.append((key, _UP[op]))
    return found


def _metric(node: Node) -> str | None:
    """`step.metric` when `node` is (a shift of) this run's `steps.S.metrics.M`."""
    while True:
        if isinstance(node, Arithmetic):  # `x - 0.02` moves with x; `x * -1` is not read
            if any(op not in "+-" for op, _, _ in node.rest):
                return None
            node = node.first
        elif isinstance(node, Unary) and node.op == "-":
            return None
        else:
            break
    if not isinstance(node, Reference):
        return None
    path = node.path
    if len(path) == 4 and path[0] == "steps" and path[2] == "metrics":
        return f"{path[1]}.{path[3]}"
    return None


def direction_of(found: Mapping[str, Direction], key: str) -> Direction | None:
    """`key`'s direction: declared for `step.metric`, else for the bare metric name.

    >>> direction_of({"rmse": "lower"}, "evaluate.rmse"), direction_of({}, "evaluate.x")
    ('lower', None)
    """
    if key in found:
        return found[key]
    return found.get(key.split(".", 1)[-1])


def main_metric(found: Mapping[str, Direction], keys: Iterable[str]) -> str | None:
    """The metric a chart follows: the first with a direction among `keys`, else the first.

    `found` keeps declared metrics first and gate metrics next (see `directions`).

    >>> main_metric({"evaluate.auc": "higher"}, ["train.loss", "evaluate.auc"])
    'evaluate.auc'
    >>> main_metric({}, ["train.loss", "evaluate.auc"])
    'train.loss'
    """
    present = list(dict.fromkeys(keys))
    for wanted in found:
        for key in present:
            if key == wanted or key.split(".", 1)[-1] == wanted:
                return key
    return present[0] if present else None
