"""The GitHub Action's entrypoint: `INPUT_*` variables to one `sluice` command, run as PID 1."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import yaml

from engine.adapters import github_env as github
from engine.adapters.pipeline_files import find_pipeline, load_repo_config
from engine.cli.action_inputs import (
    JSON_COMMANDS,
    check_gate,
    command_argv,
    output_names,
    read_inputs,
    settings,
    status_output,
    unused_inputs,
)
from engine.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from engine.core.manifest import RunManifest
from engine.errors import ActionError, EngineUnavailable
from engine.local import gitcli

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        done = gitcli.run(
            workspace, "config", "--get-regexp", r"^http\..*\.extraheader$", env=probe, timeout=30
        )
    except EngineUnavailable:
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
        import docker  # lazy: only to find this container's image, once

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
        branch = config.results.branch
        return github.summary(runs, dags, {}, heading=heading, results_branch=branch)
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
    added = ""
    if path := env.get("GITHUB_STEP_SUMMARY"):
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
            f.seek(sizes[1])
            added = f.read()
    # the lasting-store warning (cli/common.py) is no summary of the runs
    summary = [line for line in added.splitlines() if not line.startswith(github.STORE_WARNING)]
    return names, any(line.strip() for line in summary)


def _run_json(
    child: Child, argv: list[str], env: Mapping[str, str], cwd: Path
) -> tuple[int, list[dict[str, Any]]]:
    """Run a command that prints manifests on stdout; its exit code and the manifests."""
    with tempfile.TemporaryFile() as out:
        code = child.run(argv, env, cwd, stdout=out)
        out.seek(0)
        return code, _manifests(out.read().decode("utf-8", "replace"))


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
            check_gate(found[0], inputs)
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
        status = status_output(command, code, manifests)
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
