"""Shared test helpers: git(), make_repo(), poll(), sluice() (the CLI, in process or not);
fixtures: a Docker daemon (never skipped under CI), test images, run ids, a fake GitHub API."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn, TypeVar

import docker
import pytest
from click.testing import CliRunner

# The GitHub workflow emulator's fixtures (gh_evaluator, image_registry, published_engine_image,
# gh_api): registered here, in the root conftest, so that every way of collecting finds them.
pytest_plugins = ["ghemu.fixtures"]

ROOT = Path(__file__).resolve().parent.parent  # the checkout under test
BUSYBOX = "sluice-test/busybox:1"
PYTHON = "python:3.11-slim"
RUN_LABEL = "sluice.run-id"
ENGINE_LABEL = "sluice.engine"
T = TypeVar("T")
_RUN_IDS: set[str] = set()  # handed out by the run_id fixture in this session


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; under CI a missing daemon or image is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: Docker tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_image(docker_client: docker.DockerClient) -> str:
    """The engine image built from Dockerfile (offline; rebuilt only when the engine changed).

    What the Action runs, and what a step with `image: "@engine"` runs in.
    """
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["bash", str(root / "scripts" / "build-engine-image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"building the engine image failed:\n{done.stderr[-4000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _unavailable(f"no Docker daemon answers ({exc}); run scripts/docker-up.sh")
    yield client
    client.close()


def _sluice_containers(client: docker.DockerClient) -> dict[str, dict[str, str]]:
    listed = client.containers.list(all=True, filters={"label": RUN_LABEL}, sparse=True)
    return {str(c.id): c.attrs.get("Labels") or {} for c in listed}


def _ours(labels: dict[str, str]) -> bool:
    """Made by this test process: its engine label, or a run id this session handed out.

    Other sessions may share the daemon; their containers are none of our business.
    """
    engine = f"{socket.gethostname()}:{os.getpid()}"
    return labels.get(ENGINE_LABEL) == engine or labels.get(RUN_LABEL) in _RUN_IDS


@pytest.fixture
def no_leftover_containers(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fail the test if it leaves any `sluice.run-id` container behind (then remove them)."""
    before = set(_sluice_containers(docker_client))
    yield
    after = _sluice_containers(docker_client)
    left = {cid: labels for cid, labels in after.items() if cid not in before and _ours(labels)}
    for cid in left:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(cid, force=True)
    if left:
        pytest.fail(f"test left containers behind: {sorted(left.values(), key=str)}")


def _image(client: docker.DockerClient, ref: str) -> str:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        _unavailable(f"image {ref} is missing; run scripts/build-images.sh")
    return ref


@pytest.fixture
def busybox_image(docker_client: docker.DockerClient, no_leftover_containers: None) -> str:
    return _image(docker_client, BUSYBOX)


@pytest.fixture
def python_image(docker_client: docker.DockerClient, no_leftover_containers: None) -> str:
    return _image(docker_client, PYTHON)


@pytest.fixture
def run_id() -> str:
    """A fresh run id in the results layout's format, e.g. 20261125T101500Z-abc123."""
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    _RUN_IDS.add(run_id)
    return run_id


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a throwaway identity; fail the test when git fails.

    Returns stdout without its surrounding whitespace.
    """
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def make_repo(
    root: Path,
    pipelines: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    *,
    name: str = "repo",
    commit: str | None = None,
    origin: bool = False,
    object_format: str | None = None,
) -> Path:
    """A git repository at `root / name`: `pipelines/<file>` (dedented) and other `files`.

    Plain `git init` by default (nothing committed). `commit`: commit everything with that
    message on branch main. `origin`: also a bare `root / "origin.git"` (branch main) as its
    remote `origin`, with main pushed there (implies a commit, "pipelines" unless named).
    """
    repo = root / name
    repo.mkdir(parents=True, exist_ok=True)
    for file, text in (pipelines or {}).items():
        path = repo / "pipelines" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for file, text in (files or {}).items():
        (repo / file).parent.mkdir(parents=True, exist_ok=True)
        (repo / file).write_text(text)
    if origin:
        git(root, "init", "-q", "--bare", "-b", "main", str(root / "origin.git"))
        commit = commit or "pipelines"
    init = ["init", "-q"] + (["-b", "main"] if commit else [])
    init += [f"--object-format={object_format}"] if object_format else []
    git(root, *init, str(repo))
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", commit)
    if origin:
        git(repo, "remote", "add", "origin", str(root / "origin.git"))
        git(repo, "push", "-q", "origin", "main")
    return repo


def poll(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """`predicate()`'s first truthy value, checked every `every` seconds until `timeout` runs out.

    The one way a test waits: never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)  # poll
    return value


def sluice(
    *args: str,
    repo: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    process: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`sluice [--repo REPO] ARGS` as the console script runs it: exit code, stdout, stderr.

    In this process by default (click's CliRunner isolates stdin/stdout/stderr and `env`;
    a `None` value unsets a variable). `process=True` runs `python -m engine` in a child
    process of this checkout instead, for tests that need one (signals, a cwd, real stdio,
    timeouts); its environment is this one plus `env`.
    """
    argv = [*(["--repo", str(repo)] if repo is not None else []), *args]
    if process:
        base = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        merged = {k: v for k, v in {**base, **(env or {})}.items() if v is not None}
        return subprocess.run(
            [sys.executable, "-m", "engine", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=merged,
            check=False,
        )
    assert cwd is None, "a cwd needs process=True"
    from engine.cli.main import main  # here: tests that never call the CLI do not load it

    runner = CliRunner()
    with runner.isolation(env=dict(env or {}), color=False) as (out, err, _):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = 0
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.CompletedProcess(
            ["sluice", *argv], code, out.getvalue().decode(), err.getvalue().decode()
        )


# --- a loopback stand-in for GitHub's REST API ---------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case: HTTP's are case-insensitive
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class FakeGitHub:
    """Records every request; answers with `status` and `reply` (JSON)."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    status: int = 204
    reply: dict[str, object] | list[object] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: threading.Event | None = None  # set: hold the answer until released


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST(method="GET")

        def do_POST(self, method: str = "POST") -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            fake.requests.append(Request(method, self.path, headers, body))
            if fake.stall is not None:
                fake.stall.wait(10)
            data = json.dumps(fake.reply).encode() if fake.reply is not None else b""
            try:
                self.send_response(fake.status)
                for name, value in fake.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # a client that timed out is gone: that is what the test wanted

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    if fake.stall is not None:
        fake.stall.set()
    server.shutdown()
    server.server_close()


# --- a real S3 server on loopback (moto's standalone server) --------------------------------


@dataclass
class S3Server:
    """A `moto_server` process on 127.0.0.1: a real S3 HTTP endpoint.

    `endpoint` is its URL; `env` the variables a client (s3fs, the CLI in a child process)
    needs to reach it: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION. `bucket()` creates a fresh, empty bucket and returns its name.
    """

    endpoint: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "sluice-test",
            "AWS_SECRET_ACCESS_KEY": "sluice-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket(self) -> str:
        import urllib.request

        name = f"sluice-{secrets.token_hex(6)}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200, f"could not create bucket {name}: {answer.status}"
        return name

    def stop(self) -> None:
        """Stop the server (by its pid) and wait for it; stopping twice is harmless."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_s3_server(env: Mapping[str, str] | None = None) -> S3Server:
    """Start a `moto_server` on a free loopback port and wait (bounded) until it answers.

    For a short-lived second server (one to stop mid-test, or one with `env`
    {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} that checks credentials); the caller stops it
    with `.stop()`. Most tests want the session's shared server: the `s3_server` fixture.
    Without moto installed this skips, and under CI=true it fails.
    """
    import shutil

    program = shutil.which("moto_server")
    if program is None:
        reason = "moto_server is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: S3 tests must run, not skip)", pytrace=False)
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [program, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)

    def answers() -> bool:
        assert process.poll() is None, f"moto_server exited with {process.returncode}"
        with socket.socket() as client:
            client.settimeout(0.5)
            return client.connect_ex(("127.0.0.1", port)) == 0

    try:
        poll(answers, 30, f"moto_server on port {port}")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's one S3 server (moto, a real process on 127.0.0.1), shared by every test.

    Use `s3_server.bucket()` for a fresh bucket and `s3_server.env` for the client's
    environment (pass it as `env=` to `sluice(...)`), or the `s3_bucket` fixture, which
    does both for the current test.
    """
    server = start_s3_server()
    yield server
    server.stop()


@dataclass
class S3Bucket:
    """A fresh bucket on the session's S3 server; `url` is `s3://<name>`, `env` the client's."""

    name: str
    url: str
    env: dict[str, str]


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh, empty bucket on the shared S3 server, with the AWS variables that reach it
    set in this process's environment for the test (monkeypatch), so in-process stores and
    `sluice(...)` calls see it; pass `env=s3_bucket.env` to child processes explicitly.
    """
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    name = s3_server.bucket()
    return S3Bucket(name, f"s3://{name}", s3_server.env)
