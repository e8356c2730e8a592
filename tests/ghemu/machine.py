"""One emulated runner's job folder, and the three kinds of step it runs as GitHub's runner
does: `actions/checkout` (a fresh clone of the bare origin), `run:` (bash, as the runner's
user) and Docker actions (`docker run` with the runner's mounts and variables)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

RUNNER_UID = 1001  # the user GitHub's hosted runners run jobs as
SOCKET = "/var/run/docker.sock"
LABEL = "ghemu.job"  # on every container the emulator starts


def parse_file_commands(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `k=v` lines and `k<<DELIM` heredocs; later wins."""
    found: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc != -1 and (eq == -1 or heredoc < eq):
            key, delimiter = line[:heredoc], line[heredoc + 2 :]
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"file command {key!r}: delimiter {delimiter!r} never ends it")
            i += 1
            found[key] = "\n".join(body)
        elif eq != -1:
            found[line[:eq]] = line[eq + 1 :]
        else:
            raise ValueError(f"file command line {line!r} is neither k=v nor k<<DELIM")
    return found


def chown_tree(folder: Path, uid: int | None) -> None:
    """Give `folder` to the runner's user (nothing when that is this process's own)."""
    if uid is None or os.geteuid() != 0:
        return
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, uid, uid)


def docker_time(text: str) -> float:
    """A Docker timestamp (RFC 3339 with nanoseconds) as seconds since the epoch."""
    head, _, rest = text.partition(".")
    fraction = rest.rstrip("Z")[:6] if rest else "0"
    stamp = datetime.fromisoformat(f"{head}.{fraction.ljust(6, '0')}+00:00")
    return stamp.timestamp()


@dataclass
class Outcome:
    """How one step's process ended."""

    exit_code: int
    stopped: bool = False  # stopped by a cancellation or timeout
    container: dict[str, float] = field(default_factory=dict)  # started / finished (epoch s)


@dataclass
class JobFolder:
    """`root/workspace` (the checkout), `root/_temp/...` (file commands, event, home)."""

    root: Path
    origin: Path
    uid: int | None = None  # the runner's user, when it is not this process's

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def files(self) -> Path:
        return self.root / "_temp" / "_runner_file_commands"

    @property
    def workflow(self) -> Path:
        return self.root / "_temp" / "_github_workflow"

    @property
    def home(self) -> Path:
        return self.root / "_temp" / "_github_home"

    def prepare(self, event: Mapping[str, Any]) -> None:
        for folder in (self.workspace, self.files, self.workflow, self.home):
            folder.mkdir(parents=True, exist_ok=True)
        (self.workflow / "event.json").write_text(json.dumps(event))
        chown_tree(self.root, self.uid)

    def new_file(self, kind: str) -> Path:
        """A fresh file command file (the runner makes one per step, as its user)."""
        path = self.files / f"{kind}_{secrets.token_hex(8)}"
        path.touch()
        chown_tree(path, self.uid)
        return path


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def checkout(
    folder: JobFolder, sha: str, ref: str, with_: Mapping[str, str], token: str, server: str
) -> str:
    """actions/checkout: init, fetch the event's commit (depth 1 unless `fetch-depth: 0`),
    check out the branch at it; persist-credentials (default true) keeps the token as git's
    auth header in .git/config, as the action does. Returns a log."""
    repo = folder.workspace
    depth = int(with_.get("fetch-depth") or 1)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else "main"
    url = f"file://{folder.origin}"
    _git(repo, "init", "-q", "-b", branch)
    _git(repo, "remote", "add", "origin", str(folder.origin))
    if depth == 0:
        _git(repo, "fetch", "-q", "--prune", "--no-recurse-submodules", url,
             "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")  # fmt: skip
    else:
        _git(repo, "fetch", "-q", "--no-tags", f"--depth={depth}", url,
             f"+{sha}:refs/remotes/origin/{branch}")  # fmt: skip
    _git(repo, "checkout", "-q", "--force", "-B", branch, sha)
    if str(with_.get("persist-credentials", "true")).lower() != "false":
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        _git(repo, "config", "--local", f"http.{server}/.extraheader",
             f"AUTHORIZATION: basic {basic}")  # fmt: skip
    chown_tree(repo, folder.uid)
    return f"checked out {sha} on {branch} (fetch-depth {depth})\n"


class Process:
    """A step's process, stoppable from another thread (cancellation, timeout)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.grace = 10.0

    def stop(self, grace: float) -> None:
        self.grace = grace
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, proc: subprocess.Popen[bytes], on_stop: Any) -> tuple[int, bool]:
        stopped = False
        while True:
            try:
                return proc.wait(0.05), stopped
            except subprocess.TimeoutExpired:
                if self._stop.is_set() and not stopped:
                    stopped = True
                    on_stop()


def run_script(
    process: Process, script: str, folder: JobFolder, env: Mapping[str, str], log: Path
) -> Outcome:
    """A `run:` step: bash --noprofile --norc -eo pipefail FILE, as the runner's user.
    A stop sends SIGINT, then SIGTERM, then SIGKILL after the grace (the process group)."""
    path = folder.root / "_temp" / f"{secrets.token_hex(8)}.sh"
    path.write_text(script)
    chown_tree(path, folder.uid)
    uid = folder.uid
    user = {"user": uid, "group": uid} if uid is not None and os.geteuid() == 0 else {}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=folder.workspace, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **user,  # type: ignore[arg-type]
        )  # fmt: skip

        def stop() -> None:
            def escalate() -> None:
                for signum, wait in ((signal.SIGINT, 2.5), (signal.SIGTERM, process.grace)):
                    try:
                        os.killpg(proc.pid, signum)
                        proc.wait(wait)
                        return
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        continue
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            threading.Thread(target=escalate, daemon=True).start()

        code, stopped = process.wait(proc, stop)
    return Outcome(code, stopped)


@dataclass(frozen=True)
class DockerStep:
    """A Docker action's container as the runner starts it."""

    image: str
    inputs: Mapping[str, str]
    env: Mapping[str, str]  # GITHUB_*, RUNNER_*, the step's env
    args: tuple[str, ...] = ()
    entrypoint: str | None = None
    network: str = "host"


def input_variable(name: str) -> str:
    """INPUT_<NAME>: upper case, spaces to underscores, dashes kept (as the runner does)."""
    return "INPUT_" + name.replace(" ", "_").upper()


def docker_argv(folder: JobFolder, step: DockerStep, name: str, job: str) -> list[str]:
    """`docker run` as the runner runs a Docker action (detached from our side by --name:
    the caller stops it with `docker stop`)."""
    mounts = {
        SOCKET: SOCKET,
        str(folder.home): "/github/home",
        str(folder.workflow): "/github/workflow",
        str(folder.files): "/github/file_commands",
        str(folder.workspace): "/github/workspace",
        str(folder.origin): str(folder.origin),  # origin's URL is its path: the same inside
    }
    env = {**step.env, **{input_variable(k): v for k, v in step.inputs.items()}}
    # its own host name, as on GitHub (there: the container's id; here: its name, which
    # Docker also finds it by): engines tell each other's containers apart by host name
    argv = ["docker", "run", "--name", name, "--hostname", name, "--label", f"{LABEL}={job}"]
    argv += ["--network", step.network, "--workdir", "/github/workspace"]
    argv += [a for host, inside in mounts.items() for a in ("-v", f"{host}:{inside}")]
    argv += [a for key, value in env.items() for a in ("-e", f"{key}={value}")]
    if step.entrypoint:
        argv += ["--entrypoint", step.entrypoint]
    return [*argv, step.image, *step.args]


def run_container(
    process: Process, folder: JobFolder, step: DockerStep, job: str, log: Path
) -> Outcome:
    """Run the action's container to its end (or stop it: `docker stop -t GRACE`, SIGTERM
    then SIGKILL); its start and finish times come from the daemon, then it is removed."""
    name = f"ghemu-{secrets.token_hex(6)}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            docker_argv(folder, step, name, job), stdout=out, stderr=subprocess.STDOUT
        )

        def stop() -> None:
            grace = str(max(1, round(process.grace)))
            threading.Thread(
                target=subprocess.run,
                args=(["docker", "stop", "-t", grace, name],),
                kwargs={"capture_output": True},
                daemon=True,
            ).start()

        code, stopped = process.wait(proc, stop)
    times: dict[str, float] = {}
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .State}}", name], capture_output=True, text=True
    )
    if inspected.returncode == 0:
        state = json.loads(inspected.stdout)
        if not state["StartedAt"].startswith("0001"):
            times = {
                "started": docker_time(state["StartedAt"]),
                "finished": docker_time(state["FinishedAt"]),
            }
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return Outcome(code, stopped, times)


def split_args(text: str) -> tuple[str, ...]:
    """`with: args` of a Docker action, split as a shell would (quotes kept together)."""
    return tuple(shlex.split(text))
