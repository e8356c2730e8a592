"""GitHub events -> the runs they call for (pure: a payload and pipelines in, a plan out)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.expressions import ExpressionError
from engine.core.manifest import Trigger
from engine.core.params import DISPATCH_INPUTS, coerce_param, coerce_params
from engine.core.parse import LoadedPipeline
from engine.core.payloads import check_payload, dig
from engine.core.suggest import suggest
from engine.core.triggers.drift import bounded, holds_over
from engine.core.triggers.paths import matches_paths, normalize
from engine.core.triggers.pull_request import plan as pull_request_runs
from engine.errors import InvalidInput, NotFound, json_object

EVENTS = ("push", "pull_request", "workflow_dispatch", "repository_dispatch", "schedule")
RUN_EVENT = "sluice-run"  # repository_dispatch event type: run client_payload.pipeline
DRIFT_EVENT = "sluice-drift"  # repository_dispatch event type: a drift monitor's signal
MAX_EVENT_TYPE = 100  # GitHub's limits for repository_dispatch
MAX_CLIENT_PAYLOAD_KEYS = 10
MAX_RECORDED_BYTES = 8192  # a bigger client_payload is left out of the manifest
MAX_RECORDED_FILES = 20

_ZERO_SHA = re.compile(r"^0+$")


@dataclass(frozen=True)
class PlannedRun:
    """One run an event calls for: which pipeline, with which params, recorded as which trigger."""

    pipeline: str
    params: dict[str, Any]
    trigger: Trigger


@dataclass(frozen=True)
class RunTick:
    """A `schedule` event: the caller runs `sluice tick` (the cron slot, not the event, decides).

    GitHub delays and drops schedule events, so the event's own cron line is only noted.
    """

    schedule: str | None = None


def plan(
    event_name: str,
    payload: Mapping[str, Any],
    pipelines: Sequence[LoadedPipeline],
    *,
    changed_files: Collection[str] | None,
) -> list[PlannedRun] | RunTick:
    """The runs a GitHub event calls for, in pipeline order; an empty list: nothing to do.

        runs = plan("push", payload, pipelines, changed_files=["src/train.py"])
        # [PlannedRun(pipeline="churn", params={...}, trigger=Trigger(kind="push", ...))]

    Payloads are untrusted: their values only become params (checked against the declared
    types) and a small, bounded `Trigger.payload`; nothing here reaches a shell.

    `changed_files` (push, pull_request): the repository paths changed between `before` and
    `after` (a pull request: its base and head), or None when git could not tell (a new
    branch, a shallow clone): a push's own commit list is used then; a pull request runs
    every pipeline it could concern (engine.core.triggers.pull_request). Raises InvalidInput for an unknown event or a malformed payload.
    """
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"the {event_name} event payload is not a JSON object")
    check_payload(payload, f"the {event_name} event payload")  # a run could not record it
    if event_name == "push":
        return _push(payload, pipelines, changed_files)
    if event_name == "pull_request":
        return pull_request(payload, pipelines, changed_files)
    if event_name == "workflow_dispatch":
        return _workflow_dispatch(payload, pipelines)
    if event_name == "repository_dispatch":
        return _repository_dispatch(payload, pipelines)
    if event_name == "schedule":
        schedule = payload.get("schedule")
        return RunTick(schedule if isinstance(schedule, str) else None)
    hint = None
    if event_name == "pull_request_target":
        hint = (
            "pull_request_target runs a fork's code with the base repository's secrets and "
            "a write token: Sluice previews run on `pull_request` only (docs/pull-requests.md)"
        )
    raise InvalidInput(
        f"sluice trigger does not handle the {event_name!r} event; it handles {', '.join(EVENTS)}",
        hint=hint,
    )


# --- push -------------------------------------------------------------------------------


def is_zero_sha(value: object) -> bool:
    """GitHub's placeholder for "no commit" (`before` of a new branch, `after` of a deletion)."""
    return isinstance(value, str) and bool(_ZERO_SHA.match(value))


def files_from_commits(payload: Mapping[str, Any]) -> set[str]:
    """Every path added, modified or removed by the push's `commits` (and `head_commit`).

    GitHub lists at most 2048 commits here, and on a new branch only those new to the
    repository: a fallback for when git cannot diff `before..after`, not a replacement.
    """
    commits = payload.get("commits") or []
    if not isinstance(commits, list):
        raise InvalidInput("push payload: commits is not a list")
    head = payload.get("head_commit")
    if head is not None:
        commits = [*commits, head]
    files: set[str] = set()
    for index, commit in enumerate(commits):
        if not isinstance(commit, Mapping):
            raise InvalidInput(f"push payload: commits[{index}] is not an object")
        for key in ("added", "modified", "removed"):
            paths = commit.get(key) or []
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise InvalidInput(f"push payload: commits[{index}].{key} is not a list of paths")
            files.update(paths)
    return files


def _push(
    payload: Mapping[str, Any],
    pipelines: Sequence[LoadedPipeline],
    changed_files: Collection[str] | None,
) -> list[PlannedRun]:
    ref = payload.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise InvalidInput("push payload: ref is not a string")
    # Deleting a branch changes no file; a tag names commits that ran when their branch
    # was pushed, so neither starts a run.
    if payload.get("deleted") is True or is_zero_sha(payload.get("after")):
        return []
    if ref is not None and ref.startswith("refs/tags/"):
        return []
    changed = set(changed_files) if changed_files is not None else files_from_commits(payload)
    changed = {normalize(path) for path in changed}
    recorded = {
        "ref": ref,
        "before": _text(payload.get("before")),
        "after": _text(payload.get("after")),
        "pusher": _text(dig(payload, "pusher", "name")),
        "source": "git diff" if changed_files is not None else "commit list",
    }
    runs = []
    for loaded in pipelines:
        specs = [t.push for t in loaded.pipeline.triggers if t.push is not None]
        if not specs:
            continue
        own = normalize(loaded.file)
        hits = sorted(
            path
            for path in changed
            if path == own or any(matches_paths(spec.paths, path) for spec in specs)
        )
        if hits:
            trigger_payload = {
                **recorded,
                "files": hits[:MAX_RECORDED_FILES],
                "files_total": len(hits),
            }
            runs.append(
                PlannedRun(
                    loaded.name,
                    dict(loaded.pipeline.params),
                    Trigger(kind="push", event="push", payload=trigger_payload),
                )
            )
    return runs


def pull_request(
    payload: Mapping[str, Any],
    pipelines: Sequence[LoadedPipeline],
    changed_files: Collection[str] | None,
) -> list[PlannedRun]:
    """The preview runs a pull request calls for (engine.core.triggers.pull_request)."""
    return [PlannedRun(*run) for run in pull_request_runs(payload, pipelines, changed_files)]


# --- workflow_dispatch --------------------------------------------------------------------


def find(pipelines: Sequence[LoadedPipeline], ref: str, source: str) -> LoadedPipeline:
    """A pipeline by name or by its file's repository path; NotFound names the candidates."""
    wanted = normalize(ref)
    for loaded in pipelines:
        if ref == loaded.name or wanted == normalize(loaded.file):
            return loaded
    names = [p.name for p in pipelines]
    raise NotFound(
        f"{source}: no pipeline {ref!r}{suggest(ref, names)}; "
        f"pipelines: {', '.join(sorted(names)) or 'none'}",
        hint="give a pipeline name or the path of its file; `sluice validate` lists problems",
    )


def _params_object(raw: Any, source: str) -> dict[str, Any]:
    """A params override given as a JSON object, or as its text (workflow inputs are text)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    given = json_object(raw, source, example="'{\"n_estimators\": 200}'")
    check_payload(given, source)
    return given


def _workflow_dispatch(
    payload: Mapping[str, Any], pipelines: Sequence[LoadedPipeline]
) -> list[PlannedRun]:
    inputs = payload.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise InvalidInput("workflow_dispatch payload: inputs is not an object")
    ref = inputs.get("pipeline")
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(
            "workflow_dispatch: the input `pipeline` (a pipeline name or file) is required"
        )
    loaded = find(pipelines, ref.strip(), "workflow_dispatch input pipeline")
    source = "workflow_dispatch input params"
    given = _params_object(inputs.get("params"), source)
    params = coerce_params(loaded.pipeline.params, given, source=source, from_text=False)
    params.update(_list_inputs(inputs, loaded.pipeline.params, given))
    recorded = {
        "ref": _text(payload.get("ref")),
        "actor": _text(dig(payload, "sender", "login")),
    }
    trigger = Trigger(kind="workflow_dispatch", event="workflow_dispatch", payload=recorded)
    return [PlannedRun(loaded.name, params, trigger)]


def _list_inputs(
    inputs: Mapping[str, Any], declared: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """The list params given by inputs of their own (engine.core.gh_workflow.list_inputs).

    Inputs are text in the payload: a JSON array or comma-separated items. An input left
    empty, or at the pipeline's default, gives nothing (the run form fills every input in);
    one that changes the list while `params` also names it is an error.
    """
    out: dict[str, Any] = {}
    for name, default in declared.items():
        raw = inputs.get(name)
        if not isinstance(default, list) or name.lower() in DISPATCH_INPUTS:
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        source = f"workflow_dispatch input {name}"
        value = coerce_param(name, default, raw, from_text=True, source=source)
        if value == default:
            continue
        if name in given:
            raise InvalidInput(
                f"workflow_dispatch: param {name!r} is given twice, by the input {name} and "
                "in the input params",
                hint=f"give it in one of them; leave the input {name} at its default",
            )
        out[name] = value
    return out


# --- repository_dispatch ------------------------------------------------------------------


def _client_payload(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    event_type = payload.get("action")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= MAX_EVENT_TYPE:
        shown = f"{len(event_type)} characters" if isinstance(event_type, str) else "missing"
        raise InvalidInput(
            f"repository_dispatch: the event type (payload field `action`) must be text of "
            f"1 to {MAX_EVENT_TYPE} characters ({shown})"
        )
    client = payload.get("client_payload")
    if client is None:
        client = {}
    if not isinstance(client, dict):
        raise InvalidInput("repository_dispatch: client_payload must be a JSON object")
    if len(client) > MAX_CLIENT_PAYLOAD_KEYS:
        raise InvalidInput(
            f"repository_dispatch: client_payload has {len(client)} top-level keys; "
            f"GitHub allows at most {MAX_CLIENT_PAYLOAD_KEYS}"
        )
    return event_type, client


def _repository_dispatch(
    payload: Mapping[str, Any], pipelines: Sequence[LoadedPipeline]
) -> list[PlannedRun]:
    event_type, client = _client_payload(payload)
    source = f"repository_dispatch {event_type!r}: client_payload.params"
    recorded: dict[str, Any] = {
        "event_type": event_type,
        "branch": _text(payload.get("branch")),
        "sender": _text(dig(payload, "sender", "login")),
    }
    # The engine's own event types come first: a `webhook: {event: sluice-run}` never fires.
    if event_type == RUN_EVENT:
        ref = client.get("pipeline")
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidInput(
                f"repository_dispatch {RUN_EVENT!r}: client_payload.pipeline "
                "(a pipeline name or file) is required"
            )
        loaded = find(pipelines, ref.strip(), f"repository_dispatch {RUN_EVENT!r}")
        given = _params_object(client.get("params"), source)
        params = coerce_params(loaded.pipeline.params, given, source=source, from_text=False)
        trigger = Trigger(
            kind="repository_dispatch", event=event_type, payload={**recorded, "pipeline": ref}
        )
        return [PlannedRun(loaded.name, params, trigger)]
    if event_type == DRIFT_EVENT:
        return _drift(client, pipelines, recorded)
    given = _params_object(client.get("params"), source)
    extra = {k: v for k, v in client.items() if k != "params"}
    runs = []
    for loaded in pipelines:
        if any(t.webhook and t.webhook.event == event_type for t in loaded.pipeline.triggers):
            params = coerce_params(loaded.pipeline.params, given, source=source, from_text=False)
            trigger = Trigger(
                kind="webhook",
                event=event_type,
                payload={**recorded, "client_payload": _bounded(extra)},
            )
            runs.append(PlannedRun(loaded.name, params, trigger))
    return runs


def _metrics(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput(f"repository_dispatch {DRIFT_EVENT!r}: metrics must be a JSON object")
    for key, value in raw.items():
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise InvalidInput(
                f"repository_dispatch {DRIFT_EVENT!r}: metrics[{key!r}] must be a number, "
                "a boolean or text (metrics are flat, like metrics.json)"
            )
    return raw


def _drift(
    client: Mapping[str, Any], pipelines: Sequence[LoadedPipeline], recorded: dict[str, Any]
) -> list[PlannedRun]:
    monitor = client.get("monitor")
    if not isinstance(monitor, str) or not monitor:
        raise InvalidInput(
            f"repository_dispatch {DRIFT_EVENT!r}: client_payload.monitor "
            "(the monitor's name) is required"
        )
    if client.get("params") is not None:
        # Several pipelines may answer one monitor, each with its own params: one set of
        # overrides cannot fit them all, and silently dropping it would mislead.
        raise InvalidInput(
            f"repository_dispatch {DRIFT_EVENT!r} takes no params: pipelines bound to a "
            f"monitor run with their defaults (use {RUN_EVENT!r} to run one with params)"
        )
    metrics = _metrics(client.get("metrics"))
    runs = []
    for loaded in pipelines:
        for spec in (t.drift for t in loaded.pipeline.triggers):
            if spec is None or spec.monitor != monitor:
                continue
            try:
                fires = holds_over(spec, metrics)
            except ExpressionError as exc:
                raise InvalidInput(
                    f"repository_dispatch {DRIFT_EVENT!r}: pipeline {loaded.name!r}: "
                    f"when {spec.when!r} over the given metrics: {exc}"
                ) from None
            if not fires:
                continue
            trigger = Trigger(
                kind="drift",
                event=DRIFT_EVENT,
                payload={
                    **recorded,
                    "monitor": monitor,
                    "monitor_run": _text(client.get("monitor_run"), 64),
                    "when": spec.when,
                    "cooldown_s": spec.cooldown,
                    "metrics": bounded(metrics),
                },
            )
            runs.append(PlannedRun(loaded.name, dict(loaded.pipeline.params), trigger))
            break  # two bindings to one monitor still make one run
    return runs


# --- helpers ------------------------------------------------------------------------------


def _text(value: Any, limit: int = 256) -> str | None:
    """A recorded payload string, bounded; anything else is not recorded."""
    return value[:limit] if isinstance(value, str) else None


def _bounded(value: Any) -> Any:
    """`value` when its JSON is small enough to keep in every manifest, else a note."""
    if value is None:
        return None
    size = len(json.dumps(value, default=str))
    if size <= MAX_RECORDED_BYTES:
        return value
    return {"omitted": f"{size} bytes of JSON, over the {MAX_RECORDED_BYTES}-byte record limit"}
