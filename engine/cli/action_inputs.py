"""The Action's inputs: which `sluice` command they make, and the settings they put over sluice.yaml."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.cli.common import EXIT_INTERRUPTED, EXIT_OK
from engine.core.manifest import overall_status
from engine.errors import ActionError, json_object

COMMANDS = (
    "trigger",
    "run",
    "tick",
    "validate",
    "retry",
    "approve",
    "reject",
    "drift",
    "plan",
    "step",
    "finish",
)
JSON_COMMANDS = ("trigger", "tick", "run", "retry")  # take --json: manifests on stdout

_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![./])$")


@dataclass(frozen=True)
class Inputs:
    """The Action's inputs (action.yml), as the runner passed them: text, '' when not set."""

    command: str = "trigger"
    pipeline: str = ""
    params: str = ""
    run_id: str = ""
    step: str = ""
    results_branch: str = ""
    artifacts: str = ""
    push: str = "true"
    max_parallel: str = ""
    jobs: str = ""  # finish: the finish job's ${{ toJSON(needs) }}


def read_inputs(env: Mapping[str, str]) -> Inputs:
    """Inputs from `INPUT_<NAME>` (upper case, '-' kept); blank means the default."""
    values: dict[str, str] = {}
    for name, default in Inputs.__dataclass_fields__.items():
        key = "INPUT_" + name.upper().replace("_", "-")
        text = (env.get(key) or env.get("INPUT_" + name.upper()) or "").strip()
        values[name] = text or str(default.default)
    return Inputs(**values)


def _json_object(text: str, what: str) -> dict[str, Any]:
    return json_object(text, f"input {what}", example='{"n_estimators": 200}', error=ActionError)


def _need(inputs: Inputs, field: str) -> str:
    value: str = getattr(inputs, field)
    if not value:
        raise ActionError(f"command {inputs.command} needs the input {field.replace('_', '-')}")
    if value.startswith("-"):  # never let an input become an option of the command
        raise ActionError(f"input {field.replace('_', '-')} may not start with '-': {value!r}")
    return value


def _drift_options(params: dict[str, Any]) -> list[str]:
    """`{"reference": "a.csv", "features": ["x", "y"]}` -> `--reference a.csv --features x
    --features y`: options of `sluice drift compute`, given through the params input."""
    argv: list[str] = []
    for key, value in sorted(params.items()):
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise ActionError(f"drift option {key!r} is not an option name")
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                argv.append(f"--{key}")
            elif item is not False and item is not None:
                argv += [f"--{key}", str(item)]
    return argv


def command_argv(inputs: Inputs) -> list[str]:
    """The `sluice` arguments (after the global options) the inputs call for."""
    command = inputs.command
    if command not in COMMANDS:
        raise ActionError(f"input command is {command!r}; use one of {', '.join(COMMANDS)}")
    if command == "trigger":
        return ["trigger", "--json"]
    if command == "tick":
        return [
            "tick",
            "--json",
            *(["--pipeline", _need(inputs, "pipeline")] if inputs.pipeline else []),
        ]
    if command == "validate":
        return ["validate", *([_need(inputs, "pipeline")] if inputs.pipeline else [])]
    if command == "run":
        argv = ["run", _need(inputs, "pipeline"), "--json"]
        if inputs.params:
            argv += ["--params-json", json.dumps(_json_object(inputs.params, "params"))]
        return argv
    if command == "retry":
        return ["retry", _need(inputs, "run_id"), "--json"]
    if command in ("approve", "reject"):
        return [command, _need(inputs, "run_id")]
    if command == "plan":  # jobs mode (docs/scaling.md): these write their own outputs
        return ["plan", _need(inputs, "pipeline")]
    if command == "step":
        return ["step", _need(inputs, "run_id"), _need(inputs, "step")]
    if command == "finish":
        return ["finish", _need(inputs, "run_id"), f"--jobs={inputs.jobs}"]
    params = _json_object(inputs.params, "params") if inputs.params else {}
    return ["drift", "compute", *_drift_options(params)]


def unused_inputs(inputs: Inputs) -> list[str]:
    """Inputs given that the command ignores (worth a warning: probably a mistake)."""
    used = {
        "trigger": set(),
        "tick": {"pipeline"},
        "validate": {"pipeline"},
        "run": {"pipeline", "params"},
        "retry": {"run_id"},
        "approve": {"run_id", "step"},
        "reject": {"run_id", "step"},
        "drift": {"params"},
        "plan": {"pipeline"},
        "step": {"run_id", "step"},
        "finish": {"run_id", "jobs"},
    }.get(inputs.command, set())
    return [
        name.replace("_", "-")
        for name in ("pipeline", "params", "run_id", "step", "jobs")
        if getattr(inputs, name) and name not in used
    ]


def _push_setting(text: str) -> bool | str:
    choices: dict[str, bool | str] = {"true": True, "false": False, "auto": "auto"}
    if text.lower() not in choices:
        raise ActionError(f"input push is {text!r}; use true, false or auto")
    return choices[text.lower()]


def settings(inputs: Inputs, user: dict[str, Any] | None) -> dict[str, Any]:
    """The repository's sluice.yaml (`user`) with the inputs' settings put over it."""
    merged = dict(user or {})
    results = dict(merged.get("results") or {})
    results["push"] = _push_setting(inputs.push)
    if inputs.results_branch:
        if not _BRANCH.match(inputs.results_branch):
            raise ActionError(f"input results-branch {inputs.results_branch!r} is no branch name")
        results["branch"] = inputs.results_branch
    merged["results"] = results
    if inputs.artifacts:
        merged["artifacts"] = inputs.artifacts
    if inputs.max_parallel:
        try:
            merged["max_parallel"] = int(inputs.max_parallel)
        except ValueError:
            raise ActionError(f"input max-parallel {inputs.max_parallel!r} is no number") from None
    return merged


def output_names(text: str) -> set[str]:
    """The names set in GITHUB_OUTPUT text (`name=value` and `name<<DELIMITER` blocks)."""
    names: set[str] = set()
    lines = iter(text.splitlines())
    for line in lines:
        name, sep, _ = line.partition("=")
        if sep and "<<" not in name:
            names.add(name)
            continue
        name, sep, delimiter = line.partition("<<")
        if sep:
            names.add(name)
            for rest in lines:
                if rest == delimiter:
                    break
    return names


def exit_status(code: int) -> str:
    """The status output of a command that reports no run (validate, drift)."""
    return {EXIT_OK: "succeeded", EXIT_INTERRUPTED: "cancelled"}.get(code, "failed")


def check_gate(manifest: dict[str, Any], inputs: Inputs) -> None:
    """approve/reject naming a `step`: refuse unless that step is the one waiting."""
    steps = manifest.get("steps") or {}
    waiting = sorted(
        name
        for name, record in steps.items()
        if isinstance(record, dict) and record.get("status") == "waiting_approval"
    )
    if inputs.step not in waiting:
        raise ActionError(
            f"step {inputs.step!r} of run {inputs.run_id} is not waiting for approval"
            + (f"; waiting: {', '.join(waiting)}" if waiting else "")
        )


def status_output(command: str, code: int, manifests: list[dict[str, Any]]) -> str:
    if manifests:
        return overall_status([str(m.get("status")) for m in manifests])
    if command in JSON_COMMANDS and code == EXIT_OK:
        return "skipped"  # nothing to run
    return exit_status(code)
