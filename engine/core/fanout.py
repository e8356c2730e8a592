"""Fan-out: one step run once per set of values (`matrix` or `foreach`), and its fan-in (pure).

A pipeline as loaded keeps a fanned-out step as one template step (`ResolvedStep.fanout`).
`expand` turns it, for one run's params, into:

- its instances, `train[lr=0.1,depth=4]`: ordinary steps (retries, timeouts, caching, logs,
  the manifest) whose `${{ matrix.x }}` templates hold their values, needing what the
  template needs;
- the group step `train`, which needs every instance, never runs a container, and settles
  from its instances' statuses (`settle`) once they have all finished. Steps that need
  `train` need the group, so they wait for the whole sweep and get its fan-in.

Values are data from the pipeline file or from a list param (an untrusted payload can set
it): they reach `run` only when they are plain text (SAFE_IN_RUN).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core import templating
from engine.core.manifest import StepStatus
from engine.core.spec import FanOut, ResolvedStep
from engine.errors import InvalidInput

MAX_INSTANCES = 256  # as GitHub's own limit on the jobs one matrix makes
MAX_NAME = 100  # longer instance names are replaced by a digest of the values
ITEM = "item"  # the matrix key of a `foreach` over plain values
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = ("include", "exclude")
_PLAIN = re.compile(r"^[A-Za-z0-9_.+-]{1,40}$")  # a value shown as it is in a name
SAFE_IN_RUN = re.compile(r"^[A-Za-z0-9_.,:/@%+=-]*$")  # a value `run` may hold unquoted
_MATRIX_REF = re.compile(r"^matrix\.([A-Za-z_][A-Za-z0-9_]*)$")

Values = dict[str, bool | int | float | str]


@dataclass(frozen=True)
class Instance:
    name: str
    values: Values


class FanOutError(InvalidInput, ValueError):
    """A fan-out that cannot be expanded: empty, too big, or a value `run` cannot take."""


def _same(a: Any, b: Any) -> bool:
    """Equal, with booleans equal only to booleans (YAML's `true` is not `1`)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def param_name(text: str) -> str | None:
    """The param `${{ params.x }}` names, or None when `text` is not exactly that."""
    whole = templating.TEMPLATE_RE.fullmatch(text.strip())
    inner = whole.group(1).strip() if whole else ""
    name = inner.removeprefix("params.")
    return name if inner.startswith("params.") and KEY_RE.match(name) else None


def _listed(value: list[Any] | str, params: Mapping[str, Any], what: str) -> list[Any]:
    if isinstance(value, list):
        return value
    name = param_name(value)
    found = params.get(name) if name is not None else None
    if not isinstance(found, list):
        raise FanOutError(f"{what} must be a list, or '${{{{ params.<name> }}}}' of a list param")
    return found


def combinations(spec: FanOut, params: Mapping[str, Any], step: str = "") -> list[Values]:
    """The value sets of a fan-out, in order, without duplicates. Raises FanOutError."""
    if spec.foreach is not None:
        items = _listed(spec.foreach, params, f"foreach of step {step!r}")
        combos = [dict(item) if isinstance(item, dict) else {ITEM: item} for item in items]
    else:
        assert spec.matrix is not None
        axes = {
            key: _listed(value, params, f"matrix axis {key!r} of step {step!r}")
            for key, value in spec.matrix.axes.items()
        }
        size = math.prod(len(values) for values in axes.values()) if axes else 0
        if size > MAX_INSTANCES * 64:  # too big to list, whatever `exclude` takes away
            raise _too_many(step, size)
        combos = [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]
        combos = combos if axes else []
        combos = [c for c in combos if not any(_matches(c, e) for e in spec.matrix.exclude)]
        originals = [dict(c) for c in combos]
        for entry in spec.matrix.include:
            added = False
            for combo, original in zip(combos, originals, strict=False):
                if all(_same(original[k], v) for k, v in entry.items() if k in original):
                    combo.update(entry)
                    added = True
            if not added:
                combos.append(dict(entry))
    unique: dict[str, Values] = {}  # canonical text (types kept: 1, 1.0, true, "1") -> values
    for combo in combos:
        canonical = json.dumps([[k, type(v).__name__, v] for k, v in combo.items()])
        unique.setdefault(canonical, combo)
    if not unique:
        raise FanOutError(f"step {step!r} fans out over nothing: its matrix or list is empty")
    if len(unique) > MAX_INSTANCES:
        raise _too_many(step, len(unique))
    return list(unique.values())


def _too_many(step: str, count: int) -> FanOutError:
    return FanOutError(
        f"step {step!r} fans out into {count} instances; the limit is {MAX_INSTANCES} "
        "(as GitHub's for one matrix): split the sweep, or exclude combinations"
    )


def _matches(combo: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(k in combo and _same(combo[k], v) for k, v in entry.items())


def shown(value: Any) -> str:
    """A value as an instance name shows it: JSON for numbers and booleans, plain text as
    it is, any other text as `~` and the start of its sha256.

    >>> shown(0.1), shown(True), shown("eu-west"), shown("a b")
    ('0.1', 'true', 'eu-west', '~c8687a08')
    """
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text):
        return text
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:8]


def instance_name(step: str, values: Values) -> str:
    """`train[lr=0.1,depth=4]`; `score[eu]` for a foreach over plain values.

    >>> instance_name("train", {"lr": 0.1, "depth": 4})
    'train[lr=0.1,depth=4]'
    >>> instance_name("score", {"item": "eu"})
    'score[eu]'
    """
    if list(values) == [ITEM]:
        inner = shown(values[ITEM])
    else:
        inner = ",".join(f"{key}={shown(value)}" for key, value in values.items())
    name = f"{step}[{inner}]"
    if len(name) > MAX_NAME:
        canonical = json.dumps(values, sort_keys=True)
        name = f"{step}[#{hashlib.sha256(canonical.encode()).hexdigest()[:12]}]"
    return name


def instances(step: ResolvedStep, params: Mapping[str, Any]) -> list[Instance]:
    """A fanned-out step's instances for these params. Raises FanOutError."""
    assert step.fanout is not None
    made: dict[str, Instance] = {}
    for values in combinations(step.fanout, params, step.name):
        name = instance_name(step.name, values)
        if name in made:
            raise FanOutError(
                f"step {step.name!r}: two instances would both be named {name!r} "
                f"({json.dumps(made[name].values)} and {json.dumps(values)}): give the "
                "values distinct text"
            )
        made[name] = Instance(name, values)
    return list(made.values())


def keys(spec: FanOut) -> list[str]:
    """Every matrix key a fan-out can give its instances (literal ones; a list param's
    items are plain values, seen as `matrix.item` under `foreach`)."""
    if spec.foreach is not None:
        if isinstance(spec.foreach, list) and spec.foreach and isinstance(spec.foreach[0], dict):
            return list(dict.fromkeys(k for item in spec.foreach for k in item))
        return [ITEM]
    assert spec.matrix is not None
    found = list(spec.matrix.axes)
    for entry in spec.matrix.include:
        found += [k for k in entry if k not in found]
    return found


# ---- templates ------------------------------------------------------------------------------


def _lookup(inner: str, values: Values, step: str) -> Any:
    match = _MATRIX_REF.match(inner)
    if match is None or match.group(1) not in values:
        raise FanOutError(f"step {step!r}: '${{{{ {inner} }}}}' is not one of its matrix values")
    return values[match.group(1)]


def _in_text(text: str, values: Values, step: str, *, run: bool = False) -> str:
    def one(found: re.Match[str]) -> str:
        inner = found.group(1).strip()
        if not inner.startswith("matrix."):
            return found.group(0)  # params and trigger: the run resolves them later
        value = _lookup(inner, values, step)
        text = templating.as_text(value)
        if run and not SAFE_IN_RUN.match(text):
            raise FanOutError(
                f"step {step!r}: matrix value {json.dumps(value)[:60]} ({inner}) cannot go into run: "
                "only letters, digits and _ . , : / @ % + = - may; pass it through env "
                f"(env: {{V: '${{{{ {inner} }}}}'}}) and read \"$V\" in run"
            )
        return text

    return templating.TEMPLATE_RE.sub(one, text)


def substitute(value: Any, values: Values, step: str) -> Any:
    """`${{ matrix.x }}` resolved inside `value` (lists and dicts walked); a string that is
    exactly one such template takes the value with its type. Other templates are kept."""
    if isinstance(value, str):
        whole = templating.TEMPLATE_RE.fullmatch(value.strip())
        if whole is not None and whole.group(1).strip().startswith("matrix."):
            return _lookup(whole.group(1).strip(), values, step)
        return _in_text(value, values, step)
    if isinstance(value, list):
        return [substitute(item, values, step) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, values, step) for key, item in value.items()}
    return value


def instance_step(template: ResolvedStep, instance: Instance) -> ResolvedStep:
    """The template step made into one instance: its own name and values, templates filled."""
    values, name = instance.values, template.name
    return template.model_copy(
        update={
            "name": instance.name,
            "fanout": None,
            "instance_of": template.name,
            "matrix": dict(values),
            "run": None if template.run is None else _in_text(template.run, values, name, run=True),
            "command": substitute(template.command, values, name),
            "config": substitute(template.config, values, name),
            "env": {k: _in_text(v, values, name) for k, v in template.env.items()},
        }
    )


# ---- an expanded pipeline ---------------------------------------------------------------


def groups(steps: Iterable[ResolvedStep]) -> dict[str, tuple[str, ...]]:
    """Group step -> its instances, for the steps of an expanded pipeline."""
    return {step.name: step.instances for step in steps if step.is_group}


# ---- settling a group ---------------------------------------------------------------------


def allowed_failures(spec: FanOut, count: int) -> int:
    """How many of `count` instances may fail with the group still succeeding.

    >>> allowed_failures(FanOut(allow_failures=0.25), 10), allowed_failures(FanOut(), 10)
    (2, 0)
    """
    allow = spec.allow_failures
    if isinstance(allow, float):
        return math.floor(allow * count + 1e-9)
    return allow


_FAILED = frozenset({StepStatus.failed})
_DONE_OK = frozenset({StepStatus.succeeded, StepStatus.cached})


def settle(group: ResolvedStep, statuses: Mapping[str, StepStatus]) -> tuple[StepStatus, str]:
    """The status a group takes from its instances' (all finished), and why, in words."""
    assert group.fanout is not None
    mine = [statuses[name] for name in group.instances]
    count = len(mine)
    failed = sum(1 for s in mine if s in _FAILED)
    ok = sum(1 for s in mine if s in _DONE_OK)
    allowed = allowed_failures(group.fanout, count)
    tally = _tally(mine)
    if StepStatus.cancelled in mine and failed <= allowed:
        return StepStatus.cancelled, tally
    if failed > allowed:
        return StepStatus.failed, f"{tally} (allowed failures: {allowed})"
    if all(s is StepStatus.upstream_failed for s in mine):
        return StepStatus.upstream_failed, tally
    if StepStatus.upstream_failed in mine:
        return StepStatus.failed, tally
    if not ok:
        return StepStatus.skipped, tally
    cached = all(s in (StepStatus.cached, StepStatus.skipped) for s in mine)
    if failed:
        tally += f" (allowed failures: {allowed})"
    return (StepStatus.cached if cached else StepStatus.succeeded), tally


def _tally(statuses: Sequence[StepStatus]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.value.replace("_", " ")] = counts.get(status.value.replace("_", " "), 0) + 1
    parts = ", ".join(f"{n} {word}" for word, n in counts.items())
    noun = "instance" if len(statuses) == 1 else "instances"
    return f"{len(statuses)} {noun}: {parts}"


def should_stop(group: ResolvedStep, statuses: Mapping[str, StepStatus]) -> bool:
    """`fail_fast`: whether failures already exceed what the group allows."""
    if group.fanout is None or not group.fanout.fail_fast:
        return False
    failed = sum(1 for name in group.instances if statuses[name] in _FAILED)
    return failed > allowed_failures(group.fanout, len(group.instances))


def index(group: ResolvedStep, records: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fan-in index: each instance's name, values, status and metrics, in order.

    `records`: step name -> its manifest record (anything with status, matrix, metrics).
    """
    entries = []
    for name in group.instances:
        record = records[name]
        entries.append(
            {
                "name": name,
                "matrix": dict(record.matrix or {}),
                "status": record.status.value,
                "metrics": dict(record.metrics),
            }
        )
    return entries
