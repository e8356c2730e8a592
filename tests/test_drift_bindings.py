"""Drift bindings: which runs a signal starts, cooldowns kept on a real results branch."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import git

from engine.adapters.git_results import ResultsStore
from engine.app.drift_ledger import DriftLedger, Signal
from engine.core.expressions import ExpressionError
from engine.core.manifest import RunManifest, StepRecord, StepStatus
from engine.core.parse import LoadedPipeline, load_text
from engine.core.spec import DriftSpec
from engine.core.triggers.drift import Binding, bindings, bounded, decide, monitor_metrics

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SPEC = DriftSpec(monitor="churn-drift", when="metrics.drift_score > 0.2", cooldown=3600)


def pipeline(name: str, triggers: str = "") -> LoadedPipeline:
    text = f"name: {name}\n{triggers}steps:\n  - {{name: a, image: busybox, run: 'true'}}\n"
    return load_text(text, f"pipelines/{name}.yaml")


def bound(monitor: str, when: str = "metrics.drift_detected", cooldown: str = "6h") -> str:
    return textwrap.dedent(
        f"""\
        triggers:
          - cron: "0 2 * * *"
          - drift: {{monitor: {monitor}, when: "{when}", cooldown: {cooldown}}}
        """
    )


# --- deciding --------------------------------------------------------------------------------


def test_only_pipelines_bound_to_the_monitor_answer_it_once_each_never_itself() -> None:
    both = textwrap.dedent(
        """\
        triggers:
          - drift: {monitor: churn-drift}
          - drift: {monitor: churn-drift, when: "metrics.drift_score > 0.5"}
        """
    )
    pipelines = [
        pipeline("churn-drift", bound("churn-drift")),  # bound to itself: left out
        pipeline("retrain", both),
        pipeline("other", bound("price-drift")),
        pipeline("plain"),
        pipeline("second", bound("churn-drift")),
    ]
    found = bindings(pipelines, "churn-drift")
    assert [b.pipeline for b in found] == ["retrain", "second"]
    assert found[0].spec.when == "metrics.drift_detected"  # the first binding counts
    assert bindings(pipelines, "nobody") == []


def test_a_condition_that_holds_fires_and_starts_a_cooldown() -> None:
    verdict = decide(SPEC, {"drift_score": 0.3}, None, NOW)
    assert verdict.fires and not verdict.suppressed
    assert verdict.until == NOW + timedelta(hours=1)
    assert "holds" in verdict.reason


def test_a_condition_that_does_not_hold_is_quiet_even_after_the_cooldown() -> None:
    verdict = decide(SPEC, {"drift_score": 0.1}, None, NOW)
    assert not verdict.fires and not verdict.suppressed
    assert verdict.reason == "metrics.drift_score > 0.2 does not hold"


def test_within_the_cooldown_a_signal_is_suppressed_and_after_it_fires_again() -> None:
    fired = NOW - timedelta(minutes=59)
    inside = decide(SPEC, {"drift_score": 0.9}, fired, NOW)
    assert inside.suppressed and not inside.fires
    assert inside.until == fired + timedelta(hours=1)
    assert "cooldown runs until 2026-11-25T10:01:00Z" in inside.reason
    after = decide(SPEC, {"drift_score": 0.9}, fired, NOW + timedelta(minutes=1))
    assert after.fires


def test_a_signal_without_metrics_counts_as_drift_and_checked_skips_the_condition() -> None:
    assert decide(SPEC, None, None, NOW).fires
    assert decide(SPEC, {"drift_score": 0.0}, None, NOW, checked=True).fires


def test_a_condition_over_a_metric_of_the_wrong_type_raises() -> None:
    with pytest.raises(ExpressionError):
        decide(SPEC, {"drift_score": "high"}, None, NOW)


def test_monitor_metrics_merge_succeeded_and_cached_steps_in_order() -> None:
    manifest = RunManifest(
        run_id="20261125T100000Z-aaaaaa",
        pipeline="churn-drift",
        pipeline_file="pipelines/churn-drift.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-25T10:00:00.000Z",
        steps={
            "sample": StepRecord(status=StepStatus.cached, metrics={"rows": 10, "drift_score": 0}),
            "check": StepRecord(status=StepStatus.succeeded, metrics={"drift_score": 0.4}),
            "broken": StepRecord(status=StepStatus.failed, metrics={"drift_score": 9}),
        },
    )
    assert monitor_metrics(manifest) == {"rows": 10, "drift_score": 0.4}


def test_big_metrics_are_recorded_by_their_headline() -> None:
    many = {f"feature_{i}": 0.01 * i for i in range(400)}
    many.update(drift_detected=True, drift_score=3.99)
    assert bounded(many) == {"drift_detected": True, "drift_score": 3.99}
    assert bounded({"drift_score": 1}) == {"drift_score": 1}
    assert bounded(None) is None


# --- the ledger on a real results branch ------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "README.md").write_text("x\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "init")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def clone(origin: Path, name: str) -> Path:
    dest = origin.parent / name
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    return dest


BINDING = Binding(pipeline("retrain", bound("churn-drift", cooldown="1h")), SPEC)
DRIFTED = Signal("churn-drift", "run", "20261125T100000Z-000001", {"drift_score": 0.5})


def on_branch(repo: Path, folder: str) -> list[str]:
    return git(repo, "ls-tree", "--name-only", f"sluice-results:{folder}").split()


def test_a_firing_claims_the_cooldown_and_the_next_signal_is_recorded_as_suppressed(
    origin: Path,
) -> None:
    repo = clone(origin, "runner")
    with ResultsStore(repo, push=True) as store:
        ledger = DriftLedger(store)
        first = ledger.settle(BINDING, DRIFTED, NOW, "20261125T100000Z-bbbbbb")
        assert first.run_id == "20261125T100000Z-bbbbbb" and first.verdict.fires
        later = Signal("churn-drift", "repository_dispatch", None, {"drift_score": 0.7})
        second = ledger.settle(BINDING, later, NOW + timedelta(minutes=30), "unused")
        assert second.run_id is None and second.verdict.suppressed
        quiet = Signal("churn-drift", "run", "x", {"drift_score": 0.0})
        assert not ledger.settle(
            BINDING, quiet, NOW + timedelta(minutes=40), "unused"
        ).verdict.fires
        third = ledger.settle(BINDING, DRIFTED, NOW + timedelta(hours=1), "20261125T110000Z-cccccc")
        assert third.run_id == "20261125T110000Z-cccccc"
        records = ledger.signals("retrain", "churn-drift")
    # Newest first; a quiet signal (no drift) is not worth a record.
    assert [r["decision"] for r in records] == ["fired", "suppressed", "fired"]
    suppressed = records[1]
    assert suppressed["source"] == "repository_dispatch"
    assert suppressed["cooldown_until"] == "2026-11-25T11:00:00.000Z"
    assert suppressed["run_id"] is None and suppressed["metrics"] == {"drift_score": 0.7}
    assert records[2]["monitor_run"] == "20261125T100000Z-000001"
    # All of it is on the shared origin, under drift/<pipeline>/<monitor>/.
    assert on_branch(origin, "drift/retrain/churn-drift/fired") == ["00000001", "00000002"]
    assert len(on_branch(origin, "drift/retrain/churn-drift/signals")) == 3
    state = json.loads(git(origin, "show", "sluice-results:drift/retrain/churn-drift/state.json"))
    assert state["seq"] == 2 and state["run_id"] == "20261125T110000Z-cccccc"


def test_two_runners_settling_one_signal_start_one_run(origin: Path) -> None:
    first, second = clone(origin, "a"), clone(origin, "b")
    with ResultsStore(first, push=True) as store_a, ResultsStore(second, push=True) as store_b:
        # b reads its state before a's firing reaches the origin: both decide to fire.
        assert DriftLedger(store_b).last_fired("retrain", "churn-drift") == (None, 0)
        won = DriftLedger(store_a).settle(BINDING, DRIFTED, NOW, "20261125T100000Z-aaaaaa")
        lost = DriftLedger(store_b).settle(BINDING, DRIFTED, NOW, "20261125T100000Z-bbbbbb")
    assert won.run_id == "20261125T100000Z-aaaaaa"
    assert lost.run_id is None and lost.verdict.suppressed
    assert on_branch(origin, "drift/retrain/churn-drift/fired") == ["00000001"]


def test_a_damaged_state_file_suppresses_rather_than_storms(origin: Path) -> None:
    repo = clone(origin, "runner")
    with ResultsStore(repo, push=False) as store:
        store.commit({"drift/retrain/churn-drift/state.json": b"{not json"}, "damage")
        settled = DriftLedger(store).settle(BINDING, DRIFTED, datetime.now(UTC), "x")
    assert settled.run_id is None and settled.verdict.suppressed
