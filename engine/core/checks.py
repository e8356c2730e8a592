"""Rules beyond the schema: names, needs, cycles, `when`, cron, `${{ }}` placement, params."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from engine.core import expression_eval, expressions, fanout_checks, graph, templating
from engine.core.spec import Pipeline, ResolvedStep, StepWithoutImage, resolve_steps
from engine.core.suggest import suggest
from engine.core.values import NAME_RE

Path_ = tuple[str | int, ...]

_TEMPLATE_FIELDS = ("config", "env", "command")
_RUN_HINT = (
    "params can come from untrusted event payloads, so they reach steps as data: pass the value "
    'through env or config (env: {N: "${{ params.n }}"}) and read it in the step ("$N")'
)


@dataclass
class CheckResult:
    problems: list[tuple[Path_, str]] = field(default_factory=list)
    steps: list[ResolvedStep] = field(default_factory=list)
    dag: graph.Dag | None = None

    def add(self, path: Path_, message: str) -> None:
        self.problems.append((path, message))


def _step_items(data: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for section in ("steps", "finally"):
        items = data.get(section)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    yield section, index, item


def _strings(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    """Every string inside `value` that holds a `${{`, with its path."""
    if isinstance(value, str):
        if "${{" in value:
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, list | dict) or (isinstance(item, str) and "${{" in item):
                yield from _strings(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list | dict) or (isinstance(item, str) and "${{" in item):
                yield from _strings(item, (*path, key))


def _check_templates(
    fields: Mapping[str, Any],
    path: Path_,
    params: Mapping[str, Any],
    result: CheckResult,
    matrix: list[str] | None = None,
) -> None:
    """`${{ }}` only where it may be; `matrix`: the step's matrix keys (None: no fan-out)."""
    for key, value in fields.items():
        if key in ("matrix", "foreach"):
            continue  # `${{ params.x }}` naming a list: engine.core.fanout_checks
        if not isinstance(value, list | dict) and not (isinstance(value, str) and "${{" in value):
            continue  # most fields: no need to walk them
        for where, text in _strings(value, (*path, key)):
            if key == "run":
                inners = templating.templates_in(text)
                if not all(i.startswith("matrix.") for i in inners):
                    result.add(where, f"run strings cannot contain ${{{{ }}}}: {_RUN_HINT}")
                    continue
                for inner in inners:
                    message = fanout_checks.matrix_reference(inner, matrix)
                    if message:
                        result.add(where, message)
            elif key in _TEMPLATE_FIELDS:
                for inner in templating.templates_in(text):
                    if inner.startswith("matrix."):
                        message = fanout_checks.matrix_reference(inner, matrix)
                    else:
                        message = templating.check_reference(inner, params)
                    if message:
                        result.add(where, message)
            elif key == "approval":
                _check_approval(text, where, params, result)
            elif key != "when":
                result.add(
                    where,
                    f"{key}: ${{{{ }}}} may appear only in config, env values, command "
                    "and approval",
                )


def _check_approval(
    text: str, where: Path_, params: Mapping[str, Any], result: CheckResult
) -> None:
    """`approval` takes true, false, or exactly `${{ params.<a boolean param> }}`."""
    whole = templating.TEMPLATE_RE.fullmatch(text.strip())
    inner = whole.group(1).strip() if whole else ""
    name = inner.removeprefix("params.")
    if not whole or not inner.startswith("params.") or "." in name:
        result.add(where, "approval is true, false, or '${{ params.<name> }}' of a boolean param")
        return
    message = templating.check_reference(inner, params)
    if message:
        result.add(where, message)
    elif not isinstance(params[name], bool):
        result.add(
            where, f"approval: param {name!r} must be a boolean (its default is true or false)"
        )


def _check_cron(trigger: Mapping[str, Any], path: Path_, result: CheckResult) -> None:
    cron = trigger.get("cron")
    schedule, timezone = (cron, None) if isinstance(cron, str) else (None, None)
    if isinstance(cron, dict):
        schedule, timezone = cron.get("schedule"), cron.get("timezone")
        path = (*path, "cron", "schedule")
    else:
        path = (*path, "cron")
    if isinstance(schedule, str):
        fields = schedule.split()
        if len(fields) != 5 or not croniter.is_valid(schedule):
            result.add(
                path,
                f"invalid cron expression {schedule!r}: use 5 fields, minute hour day month "
                "weekday, in UTC unless a timezone is given (e.g. '0 2 * * *')",
            )
    if isinstance(timezone, str):
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            result.add(
                (*path[:-1], "timezone"),
                f"unknown time zone {timezone!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'",
            )


def _check_triggers(data: Mapping[str, Any], result: CheckResult) -> None:
    triggers = data.get("triggers")
    if not isinstance(triggers, list):
        return
    for index, trigger in enumerate(triggers):
        if not isinstance(trigger, dict):
            continue
        path: Path_ = ("triggers", index)
        if "cron" in trigger:
            _check_cron(trigger, path, result)
        drift = trigger.get("drift")
        if isinstance(drift, dict):
            monitor = drift.get("monitor")
            if isinstance(monitor, str) and not NAME_RE.match(monitor):
                result.add(
                    (*path, "drift", "monitor"), f"monitor {monitor!r} is not a pipeline name"
                )
            when = drift.get("when")
            if isinstance(when, str):
                _check_when(
                    when, (*path, "drift", "when"), result, steps=[], params=[], roots=("metrics",)
                )


def _check_when(
    text: str,
    path: Path_,
    result: CheckResult,
    *,
    steps: Collection[str],
    params: Collection[str],
    roots: tuple[str, ...] = ("params", "steps", "baseline", "trigger"),
    fanned: Mapping[str, Collection[str]] | None = None,
    matrix: Collection[str] | None = None,
) -> expressions.Expression | None:
    try:
        expr = expressions.parse(text)
    except expressions.ExpressionError as exc:
        result.add(path, _when_mistake(text) or f"when: {exc}")
        return None
    found = expression_eval.check(
        expr, steps=steps, params=params, roots=roots, fanned=fanned or {}, matrix=matrix
    )
    if isinstance(params, Mapping):  # a list param is no single value to compare
        for ref in sorted(expr.references()):
            if ref[:1] == ("params",) and len(ref) == 2 and isinstance(params.get(ref[1]), list):
                found.append(
                    f"params.{ref[1]} is a list param, and when compares single values: "
                    f"fan a step out over it (foreach: '${{{{ params.{ref[1]} }}}}')"
                )
    for message in found:
        result.add(path, f"when: {message}")
    return expr


_NOT_OPERATORS = {"=>": ">=", "=<": "<=", "=!": "!="}


def _when_mistake(text: str) -> str | None:
    """What a `when` that does not parse most likely meant, when a usual slip explains it."""
    stripped = text.strip()
    if "${{" in stripped:
        inner = stripped.removeprefix("${{").removesuffix("}}").strip()
        bare = inner if stripped.startswith("${{") and stripped.endswith("}}") else ""
        fix = f": when: {json.dumps(bare)}" if bare and "${{" not in bare else ""
        return f"when is already an expression: write it without ${{{{ }}}}{fix}"
    for wrong, right in _NOT_OPERATORS.items():
        if wrong in stripped:
            return f"when: {wrong!r} is not an operator: use {right!r}"
    return None


def _check_needs(
    data: Mapping[str, Any], names: dict[str, tuple[str, int]], result: CheckResult
) -> dict[str, list[str]]:
    needs: dict[str, list[str]] = {}
    for section, index, item in _step_items(data):
        name = item.get("name")
        deps = item.get("needs", [])
        if (
            not isinstance(name, str)
            or names.get(name) != (section, index)
            or not isinstance(deps, list)
        ):
            continue
        needs[name] = []
        for position, dep in enumerate(deps):
            if not isinstance(dep, str):
                continue
            where: Path_ = (section, index, "needs", position)
            if dep not in names:
                result.add(
                    where, f"step {name!r} needs unknown step {dep!r}{suggest(dep, list(names))}"
                )
            elif section == "steps" and names[dep][0] == "finally":
                result.add(
                    where, f"step {name!r} cannot need {dep!r}: finally steps run after all others"
                )
            elif dep == name:
                result.add(where, f"step {name!r} needs itself")
            else:  # a finally step's needs on main steps are kept: graph draws them
                needs[name].append(dep)
    return needs


def check_pipeline(data: Mapping[str, Any], pipeline: Pipeline | None) -> CheckResult:
    """Every rule the schema cannot express; also resolves steps and the DAG when all is well."""
    result = CheckResult()
    params_raw = data.get("params")
    params: dict[str, Any] = params_raw if isinstance(params_raw, dict) else {}
    names = _step_names(data, result)
    dag = _dag(_check_needs(data, names, result), names, result)
    _check_steps(data, names, params, dag, result)
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        _check_templates(defaults, ("defaults",), params, result)
    _check_baseline(data, names, result)
    _check_metrics(data, names, result)
    _check_triggers(data, result)
    _check_images(data, result)

    if pipeline is not None and not result.problems:
        try:
            result.steps = resolve_steps(pipeline)
        except StepWithoutImage as exc:
            section, index = names.get(exc.step, ("steps", 0))
            result.add((section, index, "name"), str(exc))
        for step in result.steps:
            if step.fanout is not None:
                section, index = names[step.name]
                field = "matrix" if step.fanout.matrix is not None else "foreach"
                fanout_checks.check_expansion(
                    step, pipeline.params, (section, index, field), result.add
                )
        result.dag = dag
    return result


def _check_images(data: Mapping[str, Any], result: CheckResult) -> None:
    """Each step names an image, itself or through `defaults`: checked on the file as written,
    so a missing image is reported together with every other problem."""
    defaults = data.get("defaults")
    if "defaults" in data and not isinstance(defaults, dict):
        return  # its own problem; whether it meant to give an image is unknowable
    if isinstance(defaults, dict) and defaults.get("image") is not None:
        return
    items = list(_step_items(data))
    missing = [
        (section, index, item) for section, index, item in items if item.get("image") is None
    ]
    if len(missing) > 1 and len(missing) == len(items):
        result.add(
            ("defaults",) if "defaults" in data else ("steps",),
            "no step names an image: give every step one in defaults "
            "(defaults: {image: python:3.11-slim}), or set image on each step",
        )
        return
    for section, index, item in missing:
        name = item.get("name")
        where: Path_ = (section, index, "name") if "name" in item else (section, index)
        shown = name if isinstance(name, str) else f"{section}[{index}]"
        result.add(where, str(StepWithoutImage(shown)))


def _step_names(data: Mapping[str, Any], result: CheckResult) -> dict[str, tuple[str, int]]:
    """Each step name -> where it is first declared: (section, index)."""
    names: dict[str, tuple[str, int]] = {}
    for section, index, item in _step_items(data):
        name = item.get("name")
        if isinstance(name, str):
            if name in names:
                first = names[name]
                result.add(
                    (section, index, "name"),
                    f"duplicate step name {name!r} (also {first[0]}[{first[1]}]); step names are unique",
                )
            else:
                names[name] = (section, index)
    return names


def _dag(
    needs: dict[str, list[str]], names: dict[str, tuple[str, int]], result: CheckResult
) -> graph.Dag | None:
    """The DAG of main and finally steps; None (and a problem each) when `needs` form a cycle."""
    main_needs = {n: d for n, d in needs.items() if names[n][0] == "steps"}
    final_needs = {n: d for n, d in needs.items() if names[n][0] == "finally"}
    cycle_free = True
    for group in (main_needs, final_needs):
        cycle = graph.find_cycle(group)
        if cycle:
            cycle_free = False
            section, index = names[cycle[0]]
            result.add((section, index, "needs"), "cycle in needs: " + " -> ".join(cycle))
    if not cycle_free:
        return None
    return graph.with_finally(graph.build(main_needs), final_needs)


def _check_steps(
    data: Mapping[str, Any],
    names: dict[str, tuple[str, int]],
    params: dict[str, Any],
    dag: graph.Dag | None,
    result: CheckResult,
) -> None:
    """Each step's templates, `when` and workspace paths."""
    has_baseline = isinstance(data.get("baseline"), dict)
    level_of = {n: i for i, level in enumerate(dag.levels) for n in level} if dag else {}
    reads = _WhenReads(dag, names, has_baseline, level_of) if dag else None
    items = list(_step_items(data))
    # each fanned-out step's matrix keys: its own templates and `when`, and other steps'
    # `steps.<it>.instances.*.matrix.<key>`, are checked against them
    keys = {
        (section, index): fanout_checks.check_item(section, index, item, params, result.add)
        for section, index, item in items
    }
    fanned = {
        item["name"]: found
        for (section, index, item) in items
        if (found := keys[section, index]) is not None and isinstance(item.get("name"), str)
    }
    for section, index, item in items:
        name = item.get("name")
        mine = keys[section, index]
        _check_templates(item, (section, index), params, result, mine)
        when = item.get("when")
        if isinstance(when, str) and isinstance(name, str):
            # names and params are dicts: membership stays O(1) in big pipelines
            where = (section, index, "when")
            expr = _check_when(
                when, where, result, steps=names, params=params, fanned=fanned, matrix=mine
            )
            if expr is not None and reads is not None and name in reads.dag.needs:
                reads.check(expr, name, section, where, result)
        workspace = item.get("workspace")
        if isinstance(workspace, list):
            for position, entry in enumerate(workspace):
                if isinstance(entry, str) and (entry.startswith("/") or ".." in entry.split("/")):
                    result.add(
                        (section, index, "workspace", position),
                        f"workspace path {entry!r} must be relative to the repository, without '..'",
                    )


def _check_baseline(
    data: Mapping[str, Any], names: dict[str, tuple[str, int]], result: CheckResult
) -> None:
    baseline = data.get("baseline")
    if isinstance(baseline, dict) and isinstance(baseline.get("step"), str):
        step = baseline["step"]
        section = names.get(step, ("",))[0]
        if section == "finally":
            result.add(
                ("baseline", "step"),
                f"baseline step {step!r} is a finally step; baseline names one of the main steps",
            )
        elif section != "steps":
            result.add(
                ("baseline", "step"),
                f"baseline step {step!r} is not a step of this pipeline{suggest(step, list(names))}",
            )


def _check_metrics(
    data: Mapping[str, Any], names: dict[str, tuple[str, int]], result: CheckResult
) -> None:
    """A `metrics:` key `STEP.METRIC` names a step of the pipeline."""
    metrics = data.get("metrics")
    for key in metrics if isinstance(metrics, dict) else ():
        step = key.partition(".")[0] if isinstance(key, str) and "." in key else None
        if step is not None and NAME_RE.match(step) and step not in names:
            result.add(
                ("metrics", key),
                f"metrics key {key!r}: {step!r} is not a step of this pipeline"
                f"{suggest(step, list(names))} (a key is METRIC, or STEP.METRIC for one step's)",
            )


@dataclass
class _WhenReads:
    """A step's `when` may read only steps that finish before it starts."""

    dag: graph.Dag
    names: dict[str, tuple[str, int]]
    has_baseline: bool
    level_of: dict[str, int]

    def check(
        self,
        expr: expressions.Expression,
        name: str,
        section: str,
        path: Path_,
        result: CheckResult,
    ) -> None:
        for ref in sorted(expr.references()):
            if ref[0] == "baseline" and not self.has_baseline:
                result.add(
                    path, "when reads baseline, but the pipeline declares no baseline: {step: ...}"
                )
            if ref[0] == "steps" and len(ref) > 1 and ref[1] in self.names:
                other = ref[1]
                if section == "finally" and self.names[other][0] == "steps":
                    continue  # finally steps start after every main step
                if not self._needs(name, other):
                    result.add(
                        path,
                        f"when reads steps.{other}, which has not finished when {name!r} starts: "
                        f"add {other!r} to {name}'s needs",
                    )

    def _needs(self, step: str, target: str) -> bool:
        """Whether `step` needs `target`, directly or not.

        Walks `needs` back from `step` only through levels above `target`'s (no path to it
        leads through a lower level), so big pipelines do not take quadratic time.
        """
        floor = self.level_of.get(target, -1)
        seen: set[str] = set()
        stack = [step]
        while stack:
            for dep in self.dag.needs.get(stack.pop(), ()):
                if dep == target:
                    return True
                if dep not in seen and self.level_of.get(dep, floor + 1) > floor:
                    seen.add(dep)
                    stack.append(dep)
        return False
