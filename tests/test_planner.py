"""core/planner.py: what happens next to each pending step, from statuses alone."""

from __future__ import annotations

from typing import Any

from engine.core.manifest import StepStatus
from engine.core.parse import load_text
from engine.core.planner import Action, Decision, Planner

P, R = StepStatus.pending, StepStatus.running
OK, FAILED, SKIPPED = StepStatus.succeeded, StepStatus.failed, StepStatus.skipped

DIAMOND = """
name: diamond
defaults: {image: img}
params: {go: true, n: 1}
steps:
  - {name: a, run: a}
  - {name: b, run: b, needs: [a]}
  - {name: c, run: c, needs: [a], when: "params.go"}
  - {name: d, run: d, needs: [b, c]}
finally:
  - {name: tidy, run: tidy}
"""


def planner(text: str = DIAMOND) -> Planner:
    loaded = load_text(text, "pipelines/p.yaml")
    return Planner(loaded.dag, {step.name: step for step in loaded.steps})


def statuses(**given: StepStatus) -> dict[str, StepStatus]:
    return {name: given.get(name, P) for name in ("a", "b", "c", "d", "tidy")}


def ctx(go: Any = True) -> dict[str, Any]:
    return {"params": {"go": go, "n": 1}, "steps": {}}


def test_only_steps_whose_needs_finished_are_decided() -> None:
    assert planner().next(statuses(), ctx()) == [Decision("a", Action.run)]
    assert planner().next(statuses(a=R), ctx()) == []
    assert planner().next(statuses(a=OK), ctx()) == [
        Decision("b", Action.run),
        Decision("c", Action.run),
    ]
    assert planner().next(statuses(a=OK, b=OK, c=R), ctx()) == []  # d needs c too
    assert planner().next(statuses(a=OK, b=OK, c=OK), ctx()) == [Decision("d", Action.run)]


def test_a_cached_need_counts_as_done() -> None:
    done = statuses(a=StepStatus.cached, b=OK, c=StepStatus.cached)
    assert planner().next(done, ctx()) == [Decision("d", Action.run)]


def test_a_broken_need_makes_dependents_upstream_failed() -> None:
    assert planner().next(statuses(a=FAILED), ctx()) == [
        Decision("b", Action.upstream_failed, "needs 'a', which failed"),
        Decision("c", Action.upstream_failed, "needs 'a', which failed"),
    ]
    cancelled = planner().next(statuses(a=OK, b=StepStatus.cancelled, c=OK), ctx())
    assert cancelled == [Decision("d", Action.upstream_failed, "needs 'b', which cancelled")]
    upstream = planner().next(statuses(a=OK, b=StepStatus.upstream_failed, c=OK), ctx())
    assert upstream == [Decision("d", Action.upstream_failed, "needs 'b', which upstream failed")]


def test_a_skipped_need_skips_and_a_false_when_skips() -> None:
    assert planner().next(statuses(a=OK), ctx(go=False)) == [
        Decision("b", Action.run),
        Decision("c", Action.skip, "when is false: params.go (params.go = false)"),
    ]
    assert planner().next(statuses(a=OK, b=OK, c=SKIPPED), ctx()) == [
        Decision("d", Action.skip, "needs 'c', which was skipped")
    ]


def test_a_when_that_cannot_be_evaluated_fails_the_step() -> None:
    text = DIAMOND.replace('when: "params.go"', 'when: "params.go > 1"')
    (decision,) = [d for d in planner(text).next(statuses(a=OK), ctx(go="yes")) if d.step == "c"]
    assert decision.action is Action.fail
    assert decision.reason.startswith("when could not be evaluated: ")


def test_finally_waits_for_every_main_step_whatever_happened() -> None:
    assert planner().next(statuses(a=OK, b=OK, c=OK, d=R), ctx()) == []
    ended = statuses(a=FAILED, b=StepStatus.upstream_failed, c=StepStatus.upstream_failed)
    assert planner().next(ended, ctx()) == [
        Decision("d", Action.upstream_failed, "needs 'b', which upstream failed")
    ]
    ended["d"] = StepStatus.upstream_failed
    assert planner().next(ended, ctx()) == [Decision("tidy", Action.run)]


def test_approval_pauses_until_approved() -> None:
    text = DIAMOND.replace(
        "{name: b, run: b, needs: [a]}", "{name: b, run: b, needs: [a], approval: true}"
    )
    gated = planner(text)
    assert gated.next(statuses(a=OK), ctx()) == [
        Decision("b", Action.wait_approval, "waits for `sluice approve`"),
        Decision("c", Action.run),
    ]
    assert gated.next(statuses(a=OK, c=R), ctx(), approved={"b"}) == [Decision("b", Action.run)]
    # a false `when` wins over the approval: nothing to approve
    text = text.replace(
        "{name: b, run: b, needs: [a], approval: true}",
        '{name: b, run: b, needs: [a], approval: true, when: "params.n > 5"}',
    )
    assert planner(text).next(statuses(a=OK, c=R), ctx()) == [
        Decision("b", Action.skip, "when is false: params.n > 5 (1 <= 5)")
    ]


GATE = """
name: gate
defaults: {image: img}
params: {min_accuracy: 0.9}
baseline: {step: deploy}
steps:
  - {name: evaluate, run: e}
  - name: deploy
    run: d
    needs: [evaluate]
    when: "steps.evaluate.metrics.accuracy >= params.min_accuracy"
"""


def gate(when: str, metrics: dict[str, Any], status: str = "succeeded") -> Decision:
    text = GATE.replace('"steps.evaluate.metrics.accuracy >= params.min_accuracy"', f'"{when}"')
    loaded = load_text(text, "pipelines/p.yaml")
    plan = Planner(loaded.dag, {step.name: step for step in loaded.steps})
    context = {
        "params": {"min_accuracy": 0.9},
        "steps": {"evaluate": {"status": status, "metrics": metrics}},
        "baseline": {"steps": {"evaluate": {"status": "succeeded", "metrics": {"f1": 0.5}}}},
    }
    done = {"evaluate": StepStatus(status), "deploy": P}
    (decision,) = plan.next(done, context)
    return decision


def test_a_false_when_shows_the_values_it_compared() -> None:
    decision = gate("steps.evaluate.metrics.accuracy >= params.min_accuracy", {"accuracy": 0.858})
    assert decision == Decision(
        "deploy",
        Action.skip,
        "when is false: steps.evaluate.metrics.accuracy >= params.min_accuracy (0.858 < 0.9)",
    )
    held = gate("steps.evaluate.metrics.accuracy >= params.min_accuracy", {"accuracy": 0.95})
    assert held == Decision("deploy", Action.run)


def test_a_when_that_reads_a_metric_the_step_did_not_write_warns() -> None:
    none = gate("steps.evaluate.metrics.accuracy >= params.min_accuracy", {})
    assert none.action is Action.skip
    assert none.reason.endswith("(null >= 0.9 is false)")
    assert none.warning is not None
    assert none.warning.startswith("`accuracy` is missing: evaluate wrote no metrics.json")
    other = gate("steps.evaluate.metrics.accuracy >= params.min_accuracy", {"acc": 0.95})
    assert other.warning == (
        "`accuracy` is missing: evaluate wrote metrics without `accuracy` (it wrote acc)"
    )
    # also when the `when` holds all the same, and for the baseline's metrics
    held = gate("params.min_accuracy > 0 or steps.evaluate.metrics.accuracy > 0", {})
    assert held.action is Action.run and held.warning is None  # `or` stopped: never read
    both = gate(
        "steps.evaluate.metrics.f1 == null or steps.evaluate.metrics.f1 > "
        "baseline.steps.evaluate.metrics.f2",
        {"f1": 0.7},
    )
    assert both.action is Action.skip
    assert both.warning == (
        "`f2` is missing: the baseline run's evaluate wrote metrics without `f2` (it wrote f1)"
    )


def test_no_warning_for_a_step_that_did_not_run() -> None:
    text = GATE + "finally:\n  - {name: notify, run: n, when: 'steps.evaluate.metrics.x > 1'}\n"
    loaded = load_text(text, "pipelines/p.yaml")
    plan = Planner(loaded.dag, {step.name: step for step in loaded.steps})
    context = {"params": {}, "steps": {"evaluate": {"status": "failed", "metrics": {}}}}
    done = {"evaluate": FAILED, "deploy": StepStatus.upstream_failed, "notify": P}
    (decision,) = plan.next(done, context)
    assert decision.action is Action.skip and decision.warning is None
