"""`sluice serve` as it runs: a real process on loopback, real HTTP, real Docker, real git."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import make_repo, poll, sluice

import engine
from engine.adapters.git_results import ResultsStore
from engine.adapters.webhook_http import MAX_BODY
from engine.app.webhooks import sign, verify

SECRET = "test-webhook-secret"
ROOT = Path(engine.__file__).resolve().parents[1]  # the checkout under test, whatever the cwd
BRANCH = "sluice-results"
FINAL = {"succeeded", "failed", "cancelled"}


def pipeline(name: str, event: str, image: str, run: str = 'echo "n=$N"') -> str:
    return textwrap.dedent(
        f"""\
        name: {name}
        triggers:
          - webhook: {{event: {event}}}
        params: {{n: 1, rate: 0.5}}
        steps:
          - name: only
            image: {image}
            env: {{N: "${{{{ params.n }}}}"}}
            run: '{run}'
            cache: false
        """
    )


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def hook(
        self,
        event: str,
        payload: Any,
        *,
        delivery: str | None = None,
        github: bool = False,
        secret: str = SECRET,
    ) -> tuple[int, dict[str, Any]]:
        """POST a signed hook (the Sluice headers, or GitHub's)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        prefix = "X-Hub" if github else "X-Sluice"
        headers = {f"{prefix}-Signature-256": sign(secret.encode(), body)}
        if delivery:
            headers["X-GitHub-Delivery" if github else "X-Sluice-Delivery"] = delivery
        return self.request("POST", f"/hooks/{event}", body, headers)

    def headers_only(self, event: str, headers: dict[str, str]) -> int:
        """Send a POST's headers and no body: what the server answers before reading one."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest("POST", f"/hooks/{event}")
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _env(secret: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_WEBHOOK_SECRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if secret is not None:
        env["SLUICE_WEBHOOK_SECRET"] = secret
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `sluice serve --port 0` on a repo; stopped (SIGTERM) after the test."""
    started: list[Server] = []

    def _start(repo: Path, *args: str) -> Server:
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "--repo",
                    str(repo),
                    "serve",
                    "--port",
                    "0",
                    *args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env=_env(SECRET),
            )

        def bound() -> int | None:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log.read_text()}"
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
            return int(found.group(1)) if found else None

        server = Server(proc, poll(bound, 30, "serve to listen"), log)
        started.append(server)
        assert server.request("GET", "/healthz") == (200, {"ok": True})
        return server

    yield _start
    for server in started:
        server.stop()


def branch_manifests(repo: Path, pipeline: str) -> dict[str, dict[str, Any]]:
    """Run id -> manifest, read from the results branch with plain git."""
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", f"{BRANCH}:runs/{pipeline}"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        return {}
    ids = listed.stdout.split()
    names = "".join(f"{BRANCH}:runs/{pipeline}/{i}/manifest.json\n" for i in ids)
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input=names.encode(),
        capture_output=True,
        check=True,
    ).stdout
    found: dict[str, dict[str, Any]] = {}
    at = 0
    for run_id in ids:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        at = end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[-1])
        found[run_id] = json.loads(out[at : at + size])
        at += size + 1
    return found


# ---- signatures ---------------------------------------------------------------------------


def test_githubs_published_test_vector() -> None:
    """From GitHub's "Validating webhook deliveries" page."""
    secret, payload = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(secret, payload) == expected
    assert verify(secret, payload, expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",  # no sha256=
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "sha256=ünïcode",
    ],
)
def test_anything_but_the_signature_is_refused(header: str | None) -> None:
    assert not verify(b"It's a Secret to Everybody", b"Hello, World!", header)


def test_without_a_secret_the_server_refuses_to_start(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    for secret in (None, ""):
        unset_or_empty = {"SLUICE_WEBHOOK_SECRET": secret}
        done = sluice(
            "serve", "--port", "0", repo=repo, env=unset_or_empty, process=True, timeout=60
        )
        assert done.returncode == 2
        assert "SLUICE_WEBHOOK_SECRET is not set" in done.stderr
        assert "Traceback" not in done.stderr


# ---- the order of the checks ----------------------------------------------------------------


def test_length_is_checked_before_anything_else(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    oversize = {"Content-Length": str(MAX_BODY + 1)}
    assert server.headers_only("retrain", oversize) == 413  # unsigned, and no body sent
    assert server.headers_only("no-such-event", oversize) == 413
    assert server.headers_only("retrain", {}) == 411
    assert server.headers_only("retrain", {"Content-Length": "lots"}) == 400
    assert server.headers_only("retrain", {"Transfer-Encoding": "chunked"}) == 411
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(
            b"POST /hooks/retrain HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        first = raw.makefile("rb").readline()
    assert first.startswith(b"HTTP/1.1 413 "), first  # not "100 Continue": keep the body
    status, body = server.hook("retrain", b"x" * (MAX_BODY + 1))  # signed, and sent
    assert status == 413
    assert str(MAX_BODY) in body["error"]
    assert "POST /hooks/retrain 413" in server.log_text()


def test_signature_then_listeners_then_payload(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    good = json.dumps({"params": {"n": 2}}).encode()

    assert server.request("POST", "/hooks/retrain", good)[0] == 401  # unsigned
    assert server.hook("retrain", good, secret="wrong")[0] == 401
    assert server.hook("retrain", good, secret="wrong", github=True)[0] == 401
    resigned = {"X-Sluice-Signature-256": sign(SECRET.encode(), good + b" ")}
    assert server.request("POST", "/hooks/retrain", good, resigned)[0] == 401
    # a wrong signature on an unknown event is a 401: who may not send learns nothing
    assert server.hook("nobody-listens", b"{", secret="wrong")[0] == 401

    status, body = server.hook("nobody-listens", b"{not json")  # 404 before 400
    assert status == 404
    assert "nobody-listens" in body["error"]

    cases: list[tuple[Any, str]] = [
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        ([1, 2], "must be a JSON object"),
        ({f"k{i}": i for i in range(11)}, "11 top-level keys"),
        ({"params": [1]}, "params must be a JSON object"),
        ({"params": {"nn": 2}}, "unknown param 'nn' (did you mean 'n'?)"),
        ({"params": {"n": "two"}}, "param 'n' takes a whole number"),
    ]
    for payload, expected in cases:
        status, body = server.hook("retrain", payload)
        assert status == 400, (payload, body)
        assert expected in body["error"]

    assert server.request("GET", "/runs/20260101T000000Z-abcdef") == (
        404,
        {"error": "no run '20260101T000000Z-abcdef'"},
    )
    assert server.request("GET", "/runs/../../etc")[0] == 404
    assert server.request("GET", "/nowhere")[0] == 404
    lines = [line for line in server.log_text().splitlines() if " POST /hooks/" in line]
    assert len(lines) == 5 + 1 + len(cases)  # one line per request
    assert "sluice serve: run " not in server.log_text()
    assert not (tmp_path / "repo" / ".sluice" / "runs").exists()  # nothing ran


def test_sighup_reloads_pipelines_and_keeps_them_when_the_files_break(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    server = start(repo)
    assert server.hook("added", b"{")[0] == 404  # bad JSON: proves the event, starts nothing
    (repo / "pipelines" / "added.yaml").write_text(pipeline("added", "added", "busybox"))
    server.proc.send_signal(signal.SIGHUP)
    poll(lambda: server.hook("added", b"{")[0] == 400, 30, "the new pipeline to be served")

    (repo / "pipelines" / "broken.yaml").write_text("name: [unclosed\n")
    server.proc.send_signal(signal.SIGHUP)
    poll(lambda: "kept the previous pipelines" in server.log_text(), 30, "the failed reload")
    assert "broken.yaml" in server.log_text()
    assert server.hook("added", b"{")[0] == 400
    assert server.proc.poll() is None


# ---- runs -----------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_replayed_delivery_starts_one_run(
    tmp_path: Path, busybox_image: str, start: Callable[..., Server]
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", busybox_image)})
    server = start(repo)
    payload = {"params": {"n": 7}, "reason": "drift", "sluice_hops": 1}
    first = server.hook("retrain", payload, delivery="d-1")
    again = server.hook("retrain", payload, delivery="d-1", github=True)
    assert first[0] == again[0] == 202
    [run_id] = first[1]["run_ids"]
    assert again[1]["run_ids"] == [run_id]

    manifests = poll(
        lambda: (
            (m := branch_manifests(repo, "retrain")).get(run_id, {}).get("status") in FINAL and m
        ),
        120,
        "the run's final manifest",
    )
    assert list(manifests) == [run_id]
    manifest = manifests[run_id]
    assert manifest["status"] == "succeeded"
    assert manifest["params"] == {"n": 7, "rate": 0.5}
    assert manifest["trigger"]["kind"] == "webhook"
    assert manifest["trigger"]["event"] == "retrain"
    assert manifest["trigger"]["payload"] == {
        "event_type": "retrain",
        "client_payload": {"reason": "drift", "sluice_hops": 1},
        "delivery": "d-1",
    }
    status, served = server.request("GET", f"/runs/{run_id}")
    assert status == 200
    assert served["status"] == "succeeded"
    assert served["run_id"] == run_id
    log = subprocess.run(
        ["git", "-C", str(repo), "show", f"{BRANCH}:runs/retrain/{run_id}/logs/only.1.log"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "n=7" in log.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_two_hundred_concurrent_hooks_all_end_on_the_results_branch(
    tmp_path: Path, busybox_image: str, start: Callable[..., Server]
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", busybox_image)})
    server = start(repo, "--workers", "4")
    count = 200
    gate = threading.Barrier(count)

    def send(i: int) -> tuple[int, dict[str, Any]]:
        gate.wait()  # every request in flight at once
        return server.hook("retrain", {"params": {"n": i}}, delivery=f"burst-{i}")

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(send, range(count)))
    accepted_in = time.monotonic() - began
    assert [status for status, _ in answers] == [202] * count
    run_ids = [body["run_ids"][0] for _, body in answers]
    assert len(set(run_ids)) == count

    def all_final() -> dict[str, dict[str, Any]] | None:
        # Through the engine's reader: past results.keep_runs (100) the oldest runs move off
        # the tip to archive/, racing the other runs' records.
        with ResultsStore(repo, push=False) as store:
            found = {m.run_id: m.to_dict() for m in store.runs("retrain", 2 * count)}
        done = {i: m for i, m in found.items() if m["status"] in FINAL}
        return done if len(done) == count else None

    # Reading 200 manifests costs CPU the runs need: look once a second.
    manifests = poll(all_final, 170, f"{count} final manifests on {BRANCH}", every=1.0)
    print(
        f"accepted {count} hooks in {accepted_in:.2f}s; all recorded after {time.monotonic() - began:.1f}s"
    )
    assert set(manifests) == set(run_ids)
    assert {m["status"] for m in manifests.values()} == {"succeeded"}
    assert sorted(m["params"]["n"] for m in manifests.values()) == list(range(count))
    assert all(m["trigger"]["kind"] == "webhook" for m in manifests.values())
    assert 100 <= len(branch_manifests(repo, "retrain")) <= 150  # the tip stays bounded


@pytest.mark.docker
def test_sigterm_cancels_running_runs_drops_queued_ones_and_exits_130(
    tmp_path: Path,
    busybox_image: str,
    docker_client: docker.DockerClient,
    start: Callable[..., Server],
) -> None:
    repo = make_repo(
        tmp_path, {"slow.yaml": pipeline("slow", "slow", busybox_image, run="sleep 60")}
    )
    server = start(repo, "--workers", "1", "--queue-size", "1")

    def containers(run_id: str) -> list[Any]:
        label = f"sluice.run-id={run_id}"
        return list(docker_client.containers.list(all=True, filters={"label": label}, sparse=True))

    status, body = server.hook("slow", {})
    assert status == 202
    [running] = body["run_ids"]
    poll(lambda: containers(running), 60, "the first run's container")
    status, body = server.hook("slow", {})
    assert status == 202
    [queued] = body["run_ids"]
    assert server.request("GET", f"/runs/{queued}") == (200, {"run_id": queued, "status": "queued"})
    status, body = server.hook("slow", {})  # the queue holds one
    assert status == 503
    assert "retry later" in body["error"]

    stopped = time.monotonic()
    assert server.stop(signal.SIGTERM) == 130
    took = time.monotonic() - stopped
    assert took < 30, f"shutdown took {took:.1f}s"
    assert containers(running) == []
    manifests = branch_manifests(repo, "slow")
    assert manifests[running]["status"] == "cancelled"
    assert queued not in manifests
    log = server.log_text()
    assert f"1 queued run never started: {queued}" in log
    assert "Traceback" not in log
