"""Drift bindings on the results branch: cooldown claims and a record of every drift signal.

Per bound pipeline and monitor (both pipeline names, so safe as path parts; see core/layout):
`state.json` holds the last firing (seq, fired_at, run_id); a firing commits the claim
`fired/<seq+1>` expecting it absent, so two runners racing on one signal start one run;
`signals/<time>-<hex>.json` records every signal that held, fired or suppressed, with why.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.core import layout
from engine.core.manifest import utc_iso
from engine.core.triggers.drift import Binding, Verdict, bounded, decide
from engine.errors import ClaimLost, SluiceError
from engine.ports import Clock, ResultsBranch, SystemClock


@dataclass(frozen=True)
class Signal:
    """One drift signal: a monitor run that ended, or a `sluice-drift` dispatch."""

    monitor: str
    source: str  # "run" (a monitor run ended here) or "repository_dispatch"
    monitor_run: str | None = None
    metrics: Mapping[str, Any] | None = None
    checked: bool = False  # the bindings' `when` was already evaluated (dispatch planning)


@dataclass(frozen=True)
class Settled:
    """A signal's verdict for one binding; `run_id` names the run to start when it fires."""

    binding: Binding
    verdict: Verdict
    run_id: str | None = None


class DriftLedger:
    """Reads and writes drift cooldown state through the results branch."""

    def __init__(self, branch: ResultsBranch, clock: Clock | None = None) -> None:
        self.branch = branch
        self.clock = clock or SystemClock()

    def last_fired(self, pipeline: str, monitor: str) -> tuple[datetime | None, int]:
        """When the binding last fired (None: never) and its firing count."""
        raw = self.branch.read(layout.drift_state(pipeline, monitor))
        try:
            state = json.loads(raw) if raw else {}
            seq = int(state.get("seq", 0))
            fired = state.get("fired_at")
            at = datetime.fromisoformat(fired.replace("Z", "+00:00")) if fired else None
        except (ValueError, TypeError, AttributeError):
            # A damaged state must not start a storm of runs: count it as fired just now.
            return self.clock.now(), 0
        return at, seq

    def settle(self, binding: Binding, signal: Signal, now: datetime, run_id: str) -> Settled:
        """Decide, and record the decision; a firing claims the cooldown first.

        Raises ExpressionError when the binding's `when` cannot be evaluated over the
        metrics, and the store's errors when the results branch cannot be written (then
        nothing is started: a run without its claim could run twice).
        """
        for _ in range(3):  # a lost claim: another runner fired; re-read and decide again
            last, seq = self.last_fired(binding.pipeline, binding.spec.monitor)
            verdict = decide(binding.spec, signal.metrics, last, now, checked=signal.checked)
            if not verdict.fires and not verdict.suppressed:
                return Settled(binding, verdict)  # no drift: nothing worth a commit
            record = self._record(binding, signal, verdict, now, run_id if verdict.fires else None)
            pipeline, monitor = binding.pipeline, binding.spec.monitor
            stamp = f"{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"
            changes: dict[str, bytes | None] = {
                layout.drift_signal(pipeline, monitor, stamp): record
            }
            if not verdict.fires:
                self.branch.commit(
                    changes, f"sluice: drift {signal.monitor} -> {binding.pipeline} suppressed"
                )
                return Settled(binding, verdict)
            claim = layout.drift_fired(pipeline, monitor, seq + 1)
            changes[claim] = run_id.encode()
            changes[layout.drift_state(pipeline, monitor)] = _json(
                {
                    "seq": seq + 1,
                    "fired_at": utc_iso(now),
                    "run_id": run_id,
                    "monitor_run": signal.monitor_run,
                    "source": signal.source,
                }
            )
            try:
                self.branch.commit(
                    changes,
                    f"sluice: drift {signal.monitor} -> {binding.pipeline} fires {run_id}",
                    expect_absent=[claim],
                )
            except ClaimLost:
                continue
            return Settled(binding, verdict, run_id)
        raise SluiceError(
            f"drift {signal.monitor} -> {binding.pipeline}: the cooldown claim was lost three "
            "times in a row; nothing started"
        )

    def signals(
        self, pipeline: str | None = None, monitor: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Recorded signals, newest first: of one binding, or of every one matching."""
        names = []
        for bound in [pipeline] if pipeline else self.branch.list_dir(layout.DRIFT):
            for source in (
                [monitor] if monitor else self.branch.list_dir(layout.drift_monitors(bound))
            ):
                folder = layout.drift_signals(bound, source)
                names += [(name, folder) for name in self.branch.list_dir(folder)]
        found = []
        # Named <UTC time>-<hex>: newest first across bindings.
        for name, folder in sorted(names, reverse=True)[:limit]:
            raw = self.branch.read(f"{folder}/{name}")
            try:
                record = json.loads(raw) if raw else None
            except ValueError:
                continue  # a damaged record hides itself, not the listing
            if isinstance(record, dict):
                found.append(record)
        return found

    @staticmethod
    def _record(
        binding: Binding, signal: Signal, verdict: Verdict, now: datetime, run_id: str | None
    ) -> bytes:
        return _json(
            {
                "at": utc_iso(now),
                "pipeline": binding.pipeline,
                "monitor": signal.monitor,
                "monitor_run": signal.monitor_run,
                "source": signal.source,
                "decision": "fired" if verdict.fires else "suppressed",
                "reason": verdict.reason,
                "cooldown_until": utc_iso(verdict.until) if verdict.until else None,
                "run_id": run_id,
                "metrics": bounded(signal.metrics),
            }
        )


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
