"""The GitHub Action's entrypoint: `INPUT_*` variables to one `sluice` command, run as PID 1."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import yaml

from engine.core.manifest import overall_status
from engine.errors import ActionError, json_object

COMMANDS = ("trigger", "run", "tick", "validate", "retry", "approve", "reject", "drift")
JSON_COMMANDS = ("trigger", "tick", "run", "retry")  # take --json: manifests on stdout
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
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
    }.get(inputs.command, set())
    return [
        name.replace("_", "-")
        for name in ("pipeline", "params", "run_id", "step")
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


def git_env(env: Mapping[str, str], workspace: Path, *, has_credentials: bool) -> dict[str, str]:
    """The command's environment: git trusts the workspace (a root process in a folder
    another user owns), and, when GITHUB_TOKEN is set and the checkout kept no credentials
    (`persist-credentials: false`), git authenticates to the server with it. Nothing is
    written to any git config file."""
    pairs = [("safe.directory", str(workspace))]
    token = env.get("GITHUB_TOKEN", "")
    if token and not has_credentials:
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        pairs.append((f"http.{server}/.extraheader", f"AUTHORIZATION: basic {basic}"))
    out = dict(env)
    try:
        start = int(out.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        start = 0
    for offset, (key, value) in enumerate(pairs):
        out[f"GIT_CONFIG_KEY_{start + offset}"] = key
        out[f"GIT_CONFIG_VALUE_{start + offset}"] = value
    out["GIT_CONFIG_COUNT"] = str(start + len(pairs))
    return out


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


# --- side effects ---------------------------------------------------------------------------


def _annotate(level: str, message: str) -> None:
    text = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    print(f"::{level}::{text}", file=sys.stderr, flush=True)


def _user_settings(workspace: Path) -> dict[str, Any] | None:
    """The repository's sluice.yaml as a mapping ({} when there is none); None when it is
    not one: then the command reads it itself and reports its problems with line numbers."""
    path = workspace / "sluice.yaml"
    try:
        data = yaml.safe_load(path.read_text("utf-8")) if path.exists() else {}
    except (OSError, ValueError, yaml.YAMLError):
        return None
    data = {} if data is None else data
    if not isinstance(data, dict) or not isinstance(data.get("results") or {}, dict):
        return None
    return data


def has_checkout_credentials(workspace: Path, env: Mapping[str, str]) -> bool:
    """Whether the checkout kept an auth header in the repository's config (checkout's
    default, `persist-credentials: true`): sending a second one makes GitHub refuse."""
    probe = git_env(env, workspace, has_credentials=True)
    try:
        done = subprocess.run(
            ["git", "-C", str(workspace), "config", "--get-regexp", r"^http\..*\.extraheader$"],
            env=probe,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Child:
    """Runs commands one at a time, forwarding the signals a cancelled job sends.

    Once a signal came, nothing new starts: `run` returns 130 at once.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.signal: int | None = None
        for sig in FORWARDED:
            signal.signal(sig, self._forward)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def run(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, stdout: IO[bytes] | None = None
    ) -> int:
        """Run to the end; the exit code, 130 when a signal ended it (or came first)."""
        if self.signal is not None:
            return EXIT_INTERRUPTED
        # Its own session: a terminal's Ctrl-C reaches it once, through us.
        self.proc = subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdout=stdout, start_new_session=True
        )
        if self.signal is not None:  # came while it was starting
            self.proc.send_signal(self.signal)
        code = self.proc.wait()
        self.proc = None
        if code < 0:
            return EXIT_INTERRUPTED if self.signal is not None else 128 - code
        return code


def own_image(hostname: str) -> str | None:
    """The id of the image this container runs (Docker names a container's host by its id)."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            image = client.containers.get(hostname).attrs.get("Image")
        finally:
            client.close()
    except Exception:  # not in a container, no socket: "@engine" then says what to set
        return None
    return image if isinstance(image, str) and image.startswith("sha256:") else None


def _reap() -> None:
    """As PID 1, collect orphaned grandchildren (nobody else will)."""
    if os.getpid() != 1:
        return
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def hand_back(workspace: Path) -> int:
    """Give every file under `workspace` that this process's user owns to the workspace's
    owner, so the job's later steps (run as that user) can change and delete them.

    Links are changed themselves, never followed. Returns how many entries changed.
    """
    me, owner = os.geteuid(), workspace.stat()
    if owner.st_uid == me:
        return 0
    changed = 0
    for folder, dirs, files in os.walk(workspace):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_uid == me:
                    os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
                    changed += 1
    return changed


def _manifests(text: str) -> list[dict[str, Any]]:
    """Manifests printed by `--json`: one object (run, retry) or a list (trigger, tick)."""
    try:
        value = json.loads(text) if text.strip() else []
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    return [m for m in items if isinstance(m, dict) and "run_id" in m]


def _summary(manifests: list[dict[str, Any]], workspace: Path, heading: str) -> str | None:
    """The job summary of runs the command did not summarise itself."""
    try:
        from engine.adapters import github_env as github
        from engine.adapters.pipeline_files import find_pipeline, load_repo_config
        from engine.core.manifest import RunManifest

        runs = [RunManifest.model_validate(m) for m in manifests]
        config = load_repo_config(workspace)
        dags = {}
        for run in runs:
            with contextlib.suppress(Exception):  # a summary without its chart still helps
                found = find_pipeline(
                    workspace, workspace / config.pipelines, run.pipeline, must_exist=False
                )
                if found is not None:
                    dags[run.pipeline] = found.dag
        return github.summary(runs, dags, {}, heading=heading)
    except Exception as exc:  # the summary is a courtesy: never fail the job over it
        _annotate("warning", f"sluice: no job summary: {exc}")
        return None


def _publish(
    env: Mapping[str, str],
    written: tuple[set[str], bool],
    manifests: list[dict[str, Any]],
    status: str,
    workspace: Path,
    heading: str,
) -> None:
    """Outputs and summary, where the command did not write them itself."""
    from engine.adapters import github_env as github

    names, summarised = written
    outputs = {"run-ids": " ".join(str(m["run_id"]) for m in manifests), "status": status}
    missing = {k: v for k, v in outputs.items() if k not in names}
    if env.get("GITHUB_OUTPUT") and missing:
        github.write_outputs(Path(env["GITHUB_OUTPUT"]), missing)
    if env.get("GITHUB_STEP_SUMMARY") and not summarised and manifests:
        markdown = _summary(manifests, workspace, heading)
        if markdown:
            github.append_summary(Path(env["GITHUB_STEP_SUMMARY"]), markdown)


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0


def _written_since(env: Mapping[str, str], sizes: tuple[int, int]) -> tuple[set[str], bool]:
    """What the command itself wrote: output names, and whether it wrote a summary."""
    names: set[str] = set()
    if path := env.get("GITHUB_OUTPUT"):
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
            f.seek(sizes[0])
            names = output_names(f.read())
    return names, _size(env.get("GITHUB_STEP_SUMMARY")) > sizes[1]


def _run_json(
    child: Child, argv: list[str], env: Mapping[str, str], cwd: Path
) -> tuple[int, list[dict[str, Any]]]:
    """Run a command that prints manifests on stdout; its exit code and the manifests."""
    with tempfile.TemporaryFile() as out:
        code = child.run(argv, env, cwd, stdout=out)
        out.seek(0)
        return code, _manifests(out.read().decode("utf-8", "replace"))


def _check_gate(manifest: dict[str, Any], inputs: Inputs) -> None:
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


def _status(command: str, code: int, manifests: list[dict[str, Any]]) -> str:
    if manifests:
        return overall_status([str(m.get("status")) for m in manifests])
    if command in JSON_COMMANDS and code == EXIT_OK:
        return "skipped"  # nothing to run
    return exit_status(code)


def _command(
    child: Child, env: Mapping[str, str], workspace: Path, scratch: Path
) -> tuple[int, list[dict[str, Any]]]:
    """Build and run the command the inputs call for; its exit code and the runs' manifests."""
    inputs = read_inputs(env)
    for name in unused_inputs(inputs):
        _annotate("warning", f"sluice: command {inputs.command} does not use input {name}")
    argv = command_argv(inputs)
    sluice = [sys.executable, "-m", "engine", "--repo", str(workspace)]
    user = _user_settings(workspace)
    if user is not None:
        config = scratch / "sluice.yaml"
        config.write_text(yaml.safe_dump(settings(inputs, user)), "utf-8")
        sluice += ["--config", str(config)]
    child_env = git_env(env, workspace, has_credentials=has_checkout_credentials(workspace, env))
    if not env.get("SLUICE_ENGINE_IMAGE"):  # steps with `image: "@engine"` run in this image
        image = own_image(socket.gethostname())
        if image is not None:
            child_env["SLUICE_ENGINE_IMAGE"] = image
    show = [*sluice, "show", inputs.run_id, "--json"]
    if inputs.step and inputs.command in ("approve", "reject"):
        code, found = _run_json(child, show, child_env, workspace)
        if code == EXIT_OK and found:  # else approve/reject says what is wrong with the id
            _check_gate(found[0], inputs)
    if inputs.command in JSON_COMMANDS:
        return _run_json(child, [*sluice, *argv], child_env, workspace)
    code = child.run([*sluice, *argv], child_env, workspace)
    if inputs.command in ("approve", "reject") and code in (EXIT_OK, EXIT_FAILED):
        return code, _run_json(child, show, child_env, workspace)[1]
    return code, []


def act(env: Mapping[str, str]) -> int:
    """Run the Action; returns the exit code.

    GitHub runs a Docker action as root, with the job's workspace (owned by the runner's
    user) at /github/workspace, the runner's Docker socket mounted, and each input `x-y`
    in the variable `INPUT_X-Y`. This:

    - turns the inputs into a `sluice` command line, and `results-branch`, `artifacts`,
      `push` and `max-parallel` into a settings file (the repository's sluice.yaml with
      those keys replaced), written outside the workspace and passed as `--config`;
    - runs the command as a child process with git told that the workspace is safe
      (`safe.directory` through GIT_CONFIG_* variables: no git config file is written),
      and with `GITHUB_TOKEN`, when set, as git's credentials for the server;
    - forwards SIGINT, SIGTERM and SIGHUP to it (a cancelled job removes its step
      containers), and reaps orphans when it is PID 1;
    - writes the outputs `run-ids` and `status` (and a job summary) unless the command
      did, and gives every root-owned file under the workspace to the workspace's owner.
    """
    workspace = Path(env.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    child = Child()
    sizes = (_size(env.get("GITHUB_OUTPUT")), _size(env.get("GITHUB_STEP_SUMMARY")))
    command = read_inputs(env).command
    try:
        # The settings file and captured output live outside the workspace.
        with tempfile.TemporaryDirectory(prefix="sluice-action-") as scratch:
            try:
                code, manifests = _command(child, env, workspace, Path(scratch))
            except ActionError as exc:
                _annotate("error", f"sluice: {exc}")
                code, manifests = EXIT_INVALID, []
        status = _status(command, code, manifests)
        heading = f"Sluice ({command})"
        _publish(env, _written_since(env, sizes), manifests, status, workspace, heading)
        return code
    finally:
        _reap()
        with contextlib.suppress(OSError):
            hand_back(workspace)


def main() -> NoReturn:
    """Console entry point of the image (`python -m engine.action`)."""
    sys.exit(act(os.environ))


if __name__ == "__main__":
    main()
