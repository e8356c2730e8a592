"""What changed between two runs: params, metrics with deltas, steps and their cache sources,
output digests, and the pipeline file (pure; `sluice diff` and the pull-request comment).

Metric keys are `<step>.<metric>`. A delta's arrow is its sign (▲ up, ▼ down); whether that
is better or worse comes from the metric's preferred direction (engine.core.metric_goals),
and without one the arrow has no colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.core.manifest import RunManifest
from engine.core.metric_goals import Direction, direction_of

Value = float | int | bool
Verdict = Literal["better", "worse", "same", "changed", "new", "gone", ""]
_MARK = {"better": "🟢", "worse": "🔴"}


def number(value: Any) -> str:
    """A metric or param value as a short, exact-enough text.

    >>> number(0.951234567), number(3), number(True), number(None), number(1e-7)
    ('0.951235', '3', 'true', '—', '1e-07')
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    return str(value)


@dataclass(frozen=True)
class MetricDelta:
    """One metric in two runs: `new - old`, and what that means for its direction."""

    key: str
    old: Value | None
    new: Value | None
    direction: Direction | None = None

    @property
    def delta(self) -> float | None:
        """new - old for two numbers; None when either is missing or a boolean."""
        old, new = self.old, self.new
        if isinstance(old, bool) or isinstance(new, bool) or old is None or new is None:
            return None
        return float(
            f"{float(new) - float(old):.12g}"
        )  # 0.93 - 0.91 is 0.02, not 0.020000000000000018

    @property
    def arrow(self) -> str:
        delta = self.delta
        return "" if not delta else ("▲" if delta > 0 else "▼")

    @property
    def verdict(self) -> Verdict:
        """better/worse against the direction; same; changed (no direction, or booleans);
        new/gone when only one run has it."""
        if self.old is None and self.new is None:
            return ""
        if self.old is None:
            return "new"
        if self.new is None:
            return "gone"
        delta = self.delta
        if delta is None:
            return "same" if self.old == self.new else "changed"
        if delta == 0:
            return "same"
        if self.direction is None:
            return "changed"
        return "better" if (delta > 0) == (self.direction == "higher") else "worse"


def metric_delta(
    key: str, old: Value | None, new: Value | None, direction: Direction | None
) -> MetricDelta:
    """The change of metric `key` from `old` to `new`."""
    return MetricDelta(key, old, new, direction)


def delta_text(change: MetricDelta, *, markdown: bool = True) -> str:
    """`+0.01 🟢▲` (better), `-0.01 🔴▼` (worse), `+0.01 ▲` (no direction), `=`, `≠` (a
    boolean that flipped), `new`, `gone`.

    The plain form (`markdown=False`) spells the verdict in words instead of a coloured mark.

    >>> delta_text(metric_delta("e.auc", 0.9, 0.95, "higher"))
    '+0.05 🟢▲'
    >>> delta_text(metric_delta("e.rmse", 0.9, 0.95, "lower"), markdown=False)
    '+0.05 ▲ worse'
    >>> delta_text(metric_delta("e.x", 1, 1, None)), delta_text(metric_delta("e.x", 1, 2, None))
    ('=', '+1 ▲')
    """
    verdict = change.verdict
    if verdict in ("", "same", "new", "gone"):
        return {"": "", "same": "=", "new": "new", "gone": "gone"}[verdict]
    delta = change.delta
    if delta is None:  # booleans (or text): no amount to show
        return "≠"
    shown = f"{delta:+.4g}"
    if verdict in _MARK:
        return (
            f"{shown} {_MARK[verdict]}{change.arrow}"
            if markdown
            else f"{shown} {change.arrow} {verdict}"
        )
    return f"{shown} {change.arrow}"


def metric_values(manifest: RunManifest) -> dict[str, Value]:
    """Every metric of the run as `step.metric` -> value, in step order."""
    return {
        f"{step}.{name}": value
        for step, record in manifest.steps.items()
        for name, value in record.metrics.items()
    }


def md_cell(text: object) -> str:
    """Text safe inside a markdown table cell: one line, no column breaks, no HTML, and
    neither a mention nor a link (a zero-width space after `@` and between `]` and `(`):
    the text can come from a pull request's steps, and the comment is posted as the bot.

    >>> md_cell("a|b\\n<c>")
    'a\\\\|b &lt;c&gt;'
    >>> md_cell("@octo [see](https://example.org)") == "@\u200bocto [see]\u200b(https://example.org)"
    True
    """
    value = str(text).replace("\r", " ").replace("\n", " ")
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = value.replace("@", "@\u200b").replace("](", "]\u200b(")
    return value.replace("|", "\\|")


def metrics_table(
    subject: tuple[str, RunManifest],
    others: Sequence[tuple[str, RunManifest | None]],
    directions: Mapping[str, Direction],
) -> str:
    """A markdown table of the subject's metrics beside other runs', each other cell with the
    subject's delta against it: `| metric | this PR | production | main |`.

    A run that is None, or lacks a metric, shows `—`. Keys: the subject's, then the others'.
    """
    label, run = subject
    mine = metric_values(run)
    theirs = [(name, metric_values(other) if other else None) for name, other in others]
    keys = list(mine)
    for _, values in theirs:
        keys += [key for key in values or {} if key not in keys]
    head = ["metric", label, *(name for name, _ in theirs)]
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + " --- |" * len(head)]
    for key in keys:
        row = [f"`{md_cell(key)}`", md_cell(number(mine.get(key)))]
        for _, values in theirs:
            if values is None or key not in values:
                row.append("—")
                continue
            change = metric_delta(key, values[key], mine.get(key), direction_of(directions, key))
            shown = delta_text(change)
            row.append(md_cell(number(values[key])) + (f" ({shown})" if shown else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class RunSide:
    """The facts of one run a diff names."""

    run_id: str
    pipeline: str
    status: str
    started_at: str
    commit: str | None
    pipeline_file: str
    pipeline_sha256: str
    trigger: str

    @classmethod
    def of(cls, m: RunManifest) -> RunSide:
        return cls(
            m.run_id,
            m.pipeline,
            m.status.value,
            m.started_at,
            m.commit,
            m.pipeline_file,
            m.pipeline_sha256,
            m.trigger.kind,
        )


@dataclass(frozen=True)
class ParamChange:
    name: str
    old: Any
    new: Any
    change: Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class StepChange:
    """A step's status and cache source in both runs (None: the run has no such step)."""

    name: str
    old_status: str | None
    new_status: str | None
    old_cached_from: str | None
    new_cached_from: str | None

    @property
    def changed(self) -> bool:
        return (self.old_status, self.old_cached_from) != (self.new_status, self.new_cached_from)


@dataclass(frozen=True)
class OutputChange:
    step: str
    path: str
    old_sha256: str | None
    new_sha256: str | None

    @property
    def change(self) -> Literal["added", "removed", "changed"]:
        if self.old_sha256 is None:
            return "added"
        return "removed" if self.new_sha256 is None else "changed"


@dataclass(frozen=True)
class RunDiff:
    """Run `a` (the older, usually) against run `b`: every delta reads b - a."""

    a: RunSide
    b: RunSide
    params: list[ParamChange] = field(default_factory=list)
    metrics: list[MetricDelta] = field(default_factory=list)
    steps: list[StepChange] = field(default_factory=list)
    outputs: list[OutputChange] = field(default_factory=list)
    unchanged_outputs: int = 0

    @property
    def pipeline_changed(self) -> bool:
        return self.a.pipeline_sha256 != self.b.pipeline_sha256

    def to_dict(self) -> dict[str, Any]:
        """The `sluice diff --json` shape (docs/reports.md)."""
        return {
            "a": vars(self.a),
            "b": vars(self.b),
            "same_pipeline": self.a.pipeline == self.b.pipeline,
            "pipeline_changed": self.pipeline_changed,
            "commit_changed": self.a.commit != self.b.commit,
            "params": [
                {"name": p.name, "a": p.old, "b": p.new, "change": p.change} for p in self.params
            ],
            "metrics": [
                {
                    "key": m.key,
                    "a": m.old,
                    "b": m.new,
                    "delta": m.delta,
                    "direction": m.direction,
                    "verdict": m.verdict,
                }
                for m in self.metrics
            ],
            "steps": [
                {
                    "name": s.name,
                    "a": None if s.old_status is None else _source(s.old_status, s.old_cached_from),
                    "b": None if s.new_status is None else _source(s.new_status, s.new_cached_from),
                    "changed": s.changed,
                }
                for s in self.steps
            ],
            "outputs": [
                {
                    "step": o.step,
                    "path": o.path,
                    "a": o.old_sha256,
                    "b": o.new_sha256,
                    "change": o.change,
                }
                for o in self.outputs
            ],
            "unchanged_outputs": self.unchanged_outputs,
        }


def _source(status: str, cached_from: str | None) -> dict[str, str | None]:
    return {"status": status, "cached_from": cached_from}


_ABSENT = object()


def changed_params(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ParamChange]:
    """The params that differ, in `old`'s order then the new ones.

    >>> [(p.name, p.change) for p in changed_params({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0})]
    [('b', 'changed'), ('c', 'added')]
    """
    found = []
    for name in [*old, *(k for k in new if k not in old)]:
        before, after = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if before is _ABSENT:
            found.append(ParamChange(name, None, after, "added"))
        elif after is _ABSENT:
            found.append(ParamChange(name, before, None, "removed"))
        elif before != after or type(before) is not type(after):
            found.append(ParamChange(name, before, after, "changed"))
    return found


def diff_runs(
    a: RunManifest, b: RunManifest, directions: Mapping[str, Direction] | None = None
) -> RunDiff:
    """Everything that differs from run `a` to run `b` (metrics: all of them, with deltas)."""
    goals = directions or {}
    old_metrics, new_metrics = metric_values(a), metric_values(b)
    keys = [*old_metrics, *(k for k in new_metrics if k not in old_metrics)]
    metrics = [
        metric_delta(k, old_metrics.get(k), new_metrics.get(k), direction_of(goals, k))
        for k in keys
    ]
    steps = []
    for name in [*a.steps, *(s for s in b.steps if s not in a.steps)]:
        old, new = a.steps.get(name), b.steps.get(name)
        steps.append(
            StepChange(
                name,
                old.status.value if old else None,
                new.status.value if new else None,
                old.cached_from if old else None,
                new.cached_from if new else None,
            )
        )
    outputs, unchanged = [], 0
    old_out = {(s, p): o.sha256 for s, r in a.steps.items() for p, o in r.outputs.items()}
    new_out = {(s, p): o.sha256 for s, r in b.steps.items() for p, o in r.outputs.items()}
    for where in [*old_out, *(k for k in new_out if k not in old_out)]:
        before, after = old_out.get(where), new_out.get(where)
        if before == after:
            unchanged += 1
        else:
            outputs.append(OutputChange(where[0], where[1], before, after))
    return RunDiff(
        RunSide.of(a),
        RunSide.of(b),
        params=changed_params(a.params, b.params),
        metrics=metrics,
        steps=steps,
        outputs=outputs,
        unchanged_outputs=unchanged,
    )


def step_source(status: str | None, cached_from: str | None) -> str:
    """`succeeded`, `cached from <run>`, or `—` for a step the run does not have."""
    if status is None:
        return "—"
    return f"{status} from {cached_from}" if cached_from else status
