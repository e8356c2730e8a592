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
        Decision("c", Action.skip, "when is false: params.go"),
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
        Decision("b", Action.skip, "when is false: params.n > 5")
    ]
