"""Drift follow-up: the runs a finished monitor run's drift bindings start (or one dispatch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.adapters import pipeline_files
from engine.app import compose, execution
from engine.app.drift_ledger import DriftLedger, Signal
from engine.core.config import RepoConfig
from engine.core.expressions import ExpressionError
from engine.core.manifest import RunManifest, RunStatus, Trigger, utc_iso
from engine.core.parse import LoadedPipeline
from engine.core.triggers.drift import Binding, bindings, bounded, holds_over, monitor_metrics
from engine.errors import PipelineInvalid, SluiceError
from engine.ports import ContainerRuntime, Reporter
from engine.run.executor import Executor, RunOptions, new_run_id

MAX_DRIFT_DEPTH = 3  # a drift-started run may be a monitor itself; chains stop here
DRIFT_EVENT = "sluice-drift"


def execute_following(
    loaded: LoadedPipeline,
    options: RunOptions,
    *,
    follower: DriftFollower,
    reporter: Callable[[], Reporter | None] = lambda: None,
    runtime: ContainerRuntime | None = None,
    on_executor: Callable[[Executor], None] | None = None,
    on_finished: Callable[[RunManifest], None] | None = None,
) -> list[RunManifest]:
    """Run, then the runs its drift bindings start (theirs too, `MAX_DRIFT_DEPTH` deep).

    The first manifest is the requested run's; `on_finished` sees each as it ends. One
    `follower` can serve many runs (it loads the repository's pipelines once).
    """
    repo = follower.repo
    queue: list[tuple[LoadedPipeline, RunOptions, int]] = [(loaded, options, 0)]
    done: list[RunManifest] = []
    while queue:
        current, current_options, depth = queue.pop(0)
        manifest = execution.execute(
            repo,
            current,
            current_options,
            reporter=reporter(),
            runtime=runtime,
            on_executor=on_executor,
        )
        done.append(manifest)
        if on_finished is not None:
            on_finished(manifest)
        if depth < MAX_DRIFT_DEPTH:
            queue.extend((lp, opts, depth + 1) for lp, opts in follower.after(manifest))
    return done


def _drift_trigger(
    signal: Signal, binding: Binding, until: datetime | None, payload: dict[str, Any] | None
) -> Trigger:
    return Trigger(
        kind="drift",
        event=DRIFT_EVENT if signal.source == "repository_dispatch" else "monitor",
        payload={
            **(payload or {}),
            "monitor": signal.monitor,
            "monitor_run": signal.monitor_run,
            "source": signal.source,
            "when": binding.spec.when,
            "cooldown_s": binding.spec.cooldown,
            "cooldown_until": utc_iso(until) if until else None,
            "metrics": bounded(signal.metrics),
        },
    )


class _Clock:
    """A follower's clock as the Clock port the ledger takes."""

    def __init__(self, read: Callable[[], datetime]) -> None:
        self.read = read

    def now(self) -> datetime:
        return self.read()


class DriftFollower:
    """What a finished run's drift bindings call for: runs to start here, or one dispatch.

    Cooldowns and the record of every signal live on the results branch (engine.app.drift_ledger).
    `clock` is the command's: `sluice tick --now T` times cooldowns from T, not the wall
    clock (run ids keep the wall clock: "the latest run" is the one that started last).
    """

    def __init__(
        self,
        repo: Path,
        config: RepoConfig,
        *,
        push: bool | str | None,
        log: Callable[[str], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repo, self.config, self.push, self.log, self.clock = repo, config, push, log, clock
        self._pipelines: list[LoadedPipeline] | None = None

    def pipelines(self) -> list[LoadedPipeline]:
        """The repository's sound pipelines (a broken file elsewhere blocks no binding)."""
        if self._pipelines is None:
            found: list[LoadedPipeline] = []
            for path in pipeline_files.find_pipeline_files(self.repo / self.config.pipelines):
                try:
                    found.extend(pipeline_files.load_many([path], self.repo))
                except PipelineInvalid:
                    continue
            self._pipelines = found
        return self._pipelines

    def after(self, manifest: RunManifest) -> list[tuple[LoadedPipeline, RunOptions]]:
        """The runs to start because `manifest` (a monitor's run, maybe) just ended."""
        if manifest.status is not RunStatus.succeeded:
            return []
        bound = bindings(self.pipelines(), manifest.pipeline)
        if not bound:
            return []
        signal = Signal(
            monitor=manifest.pipeline,
            source="run",
            monitor_run=manifest.run_id,
            metrics=monitor_metrics(manifest),
        )
        if self.config.drift.start == "dispatch":
            self._dispatch(signal, bound)
            return []
        return self.admit(signal, bound)

    def admit(
        self, signal: Signal, bound: list[Binding], payload: dict[str, Any] | None = None
    ) -> list[tuple[LoadedPipeline, RunOptions]]:
        """Settle `signal` for each binding on the results branch; the runs that fire.

        `payload`: extra trigger payload for the runs (a dispatch's recorded fields).
        """
        store = compose.results_branch(self.repo, self.config, self.push)
        if store is None:
            self.log(
                f"sluice: drift {signal.monitor}: not started: drift bindings keep their "
                "cooldown on the results branch, and this is not a git repository"
            )
            return []
        runs: list[tuple[LoadedPipeline, RunOptions]] = []
        with store:
            store.catch_up()  # other runners' firings (a lost claim is caught anyway)
            ledger = DriftLedger(store, _Clock(self.clock))  # the command's clock throughout
            for binding in bound:
                now = self.clock()
                where = f"drift {signal.monitor} -> {binding.pipeline}"
                try:
                    # The run is named by the wall clock: ids sort by when runs started.
                    run_id = new_run_id(datetime.now(UTC))
                    settled = ledger.settle(binding, signal, now, run_id)
                except ExpressionError as exc:
                    self.log(f"sluice: warning: {where}: when {binding.spec.when!r}: {exc}")
                    continue
                except SluiceError as exc:  # unclaimed: starting could run it twice
                    self.log(f"sluice: error: {where}: not started: {exc}")
                    continue
                verdict = settled.verdict
                if settled.run_id is None:
                    if verdict.suppressed:
                        self.log(f"sluice: {where}: suppressed: {verdict.reason}")
                    continue
                self.log(f"sluice: {where}: {verdict.reason}: starting run {settled.run_id}")
                trigger = _drift_trigger(signal, binding, verdict.until, payload)
                options = execution.run_options(
                    self.repo, self.config, binding.loaded, trigger=trigger, push=self.push
                )
                options.run_id = settled.run_id
                runs.append((binding.loaded, options))
        return runs

    def _dispatch(self, signal: Signal, bound: list[Binding]) -> None:
        """`drift: {start: dispatch}`: one `sluice-drift` event when any binding's `when` holds.

        The receiving workflow's `sluice trigger` applies the cooldown, as for any dispatch.
        """
        wanted = []
        for binding in bound:
            try:
                if holds_over(binding.spec, signal.metrics or {}):
                    wanted.append(binding.pipeline)
            except ExpressionError as exc:
                self.log(f"sluice: warning: drift -> {binding.pipeline}: {exc}")
        if not wanted:
            return
        repository = os.environ.get("GITHUB_REPOSITORY", "")
        token = os.environ.get("GITHUB_TOKEN", "")
        where = f"drift {signal.monitor} ({', '.join(wanted)})"
        if not repository or not token.strip():
            self.log(
                f"sluice: error: {where}: drift.start is dispatch, but GITHUB_REPOSITORY and "
                "GITHUB_TOKEN are not both set: nothing was sent"
            )
            return
        # lazy: the HTTP client (urllib, ssl: ~4 ms) loads only when a signal is dispatched
        from engine.adapters.github_api import DEFAULT_API, current_hops, dispatch

        client = {
            "monitor": signal.monitor,
            "monitor_run": signal.monitor_run,
            "metrics": bounded(signal.metrics),
        }
        try:
            dispatch(
                repository,
                DRIFT_EVENT,
                client,
                token=token,
                api_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API,
                hops=current_hops(os.environ),
                max_hops=3,
                timeout=30.0,
            )
        except SluiceError as exc:
            self.log(f"sluice: error: {where}: the {DRIFT_EVENT} dispatch failed: {exc}")
            return
        self.log(f"sluice: {where}: sent {DRIFT_EVENT} to {repository}")
