"""What a hostile request can do to `sluice serve`, over real HTTP on loopback.

Issue 12: a signed body with a lone surrogate was answered 202 and its run was lost (item 6);
`Content-Length: ²` crashed a handler (14); the timeout was per `recv`, so a client sending a
byte now and then held a connection for ever (15); connections were unbounded, one thread
each (16); conflicting Content-Length headers were accepted (17). And the defences that held:
431 on 10k headers, 411 on a chunked body, 400 on deep JSON and on invalid UTF-8, /healthz
answering through thousands of idle connections.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_serve
from conftest import make_repo, poll, sluice
from test_serve import FINAL, SECRET, Server, pipeline

from engine.app.webhooks import sign

LONE_SURROGATES: list[bytes] = [
    b'{"a": "\\ud800"}',  # the probe's body
    b'{"\\udc00": 1}',  # in a key
    b'{"x": [1, {"y": ["ok", "tail \\udfff"]}]}',  # deep in a value
    b'{"params": {"n": 2}, "note": "\\ude00\\ud83d"}',  # a pair in the wrong order
    b'{"a": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate bytes: json.loads lets them through
]


start = test_serve.start  # the fixture that runs `sluice serve --port 0`


def _threads(server: Server) -> int:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def _status_line(sock: socket.socket) -> bytes:
    """The first line the server sends (b"" if it closed without a word)."""
    line = b""
    with contextlib.suppress(OSError):
        while not line.endswith(b"\n") and (byte := sock.recv(1)):
            line += byte
    return line


def _signed(body: bytes) -> dict[str, str]:
    return {"X-Sluice-Signature-256": sign(SECRET.encode(), body)}


@contextlib.contextmanager
def _connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        yield socks
    finally:
        for sock in socks:
            sock.close()


# ---- item 6: nothing lost after a 202 --------------------------------------------------------


def test_a_lone_surrogate_is_refused_before_any_202(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    for body in LONE_SURROGATES:
        status, reply = server.request("POST", "/hooks/retrain", body, _signed(body))
        assert status == 400, (body, reply)
        assert "lone surrogate" in reply["error"], reply
    assert "sluice serve: run " not in server.log_text()
    assert not (tmp_path / "repo" / ".sluice" / "runs").exists()  # nothing was queued


def test_sluice_trigger_refuses_a_lone_surrogate_with_exit_2(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    events = {
        "repository_dispatch": '{"action": "retrain", "client_payload": {"a": "\\ud800"}}',
        "workflow_dispatch": json.dumps(
            {"inputs": {"pipeline": "retrain", "params": '{"n": 1, "x": "\\udbff"}'}}
        ),
    }
    for name, text in events.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        done = sluice(
            "trigger", "--event-name", name, "--event-path", str(path), "--no-push", repo=repo,
            process=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (name, done.stderr)
        assert "lone surrogate" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (repo / ".sluice" / "runs").exists()  # nothing ran


@pytest.mark.docker
def test_every_202_has_a_recorded_run(
    tmp_path: Path, busybox_image: str, start: Callable[..., Server]
) -> None:
    """Figure: webhook requests lost after a 202 (goal 0)."""
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", busybox_image)})
    server = start(repo, "--workers", "2")
    deep = b'{"d": ' + b"[" * 900 + b"]" * 900 + b"}"  # parses, but no run could copy it
    valid: list[bytes] = [
        b'{"params": {"n": 3}}',
        '{"emoji": "\U0001f600", "cjk": "\u6f22"}'.encode(),
        b'{"pair": "\\ud83d\\ude00"}',  # an escaped surrogate pair is one character
        b'{"nan": NaN, "inf": Infinity, "big": 1e400}',
        b'{"nul": "a\\u0000b", "": "empty key", "ctl": "\\u001b[31m\\r::warning::x"}',
        json.dumps({"big": "x" * 9000}).encode(),  # over the recorded-payload limit
        b'{"params": {"rate": 1e308}}',
        b'{"d": ' + b"[" * 60 + b"]" * 60 + b"}",
    ]
    hostile: list[bytes] = [
        *LONE_SURROGATES,
        deep,
        b'{"a": "\xff"}',  # invalid UTF-8
        b"[" * 100_000,  # deeper than JSON parsing goes
        b'{"n": ' + b"9" * 5000 + b"}",  # more digits than Python converts
    ]
    accepted: list[str] = []
    for body in valid + hostile:
        status, reply = server.request("POST", "/hooks/retrain", body, _signed(body))
        assert status == (202 if body in valid else 400), (body[:80], status, reply)
        accepted.extend(reply.get("run_ids", []))
    refused = len(hostile)

    def recorded(run_id: str) -> bool:
        status, served = server.request("GET", f"/runs/{run_id}")
        return status == 200 and served.get("status") in FINAL

    def missing() -> list[str]:
        return [run_id for run_id in accepted if not recorded(run_id)]

    with contextlib.suppress(AssertionError):  # the count is printed, then asserted
        poll(lambda: not missing(), 180, "every accepted run recorded", every=1.0)
    lost = missing()
    print(f"webhook requests: {len(accepted)} accepted, {refused} refused, {len(lost)} lost")
    assert len(accepted) == len(valid)
    assert lost == [], "accepted with 202 but never recorded: " + ", ".join(lost)
    assert "could not run" not in server.log_text()


# ---- items 14 and 17: the length, parsed strictly --------------------------------------------


def test_content_length_is_ascii_digits_only(tmp_path: Path, start: Callable[..., Server]) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    # Header bytes are read as Latin-1: b"\xb2" is "²", which isdigit() but int() refuses.
    values = [b"\xb2", b"\xb9\xb3", "١٢".encode(), b"+5", b"-1", b"0x10", b"1_0", b"5 5", b""]
    for value in values:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(
                b"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n" % value
            )
            assert _status_line(raw).startswith(b"HTTP/1.1 400 "), value
    assert server.request("GET", "/healthz") == (200, {"ok": True})
    assert "Traceback" not in server.log_text()
    assert "Exception occurred" not in server.log_text()


def test_conflicting_content_lengths_are_refused(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    for lengths in [("5", "6"), ("5", "5, 6"), ("0", "5")]:
        headers = "".join(f"Content-Length: {n}\r\n" for n in lengths)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(
                f"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + b"{}"
            )
            assert _status_line(raw).startswith(b"HTTP/1.1 400 "), lengths
    assert "Content-Length" in server.log_text()


def test_a_body_shorter_than_its_length_gets_408_at_the_deadline(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    server = start(repo, "--request-timeout", "1.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        began = time.monotonic()
        raw.sendall(b"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}")
        line = _status_line(raw)
        took = time.monotonic() - began
    assert line.startswith(b"HTTP/1.1 408 "), line
    assert 1.0 <= took < 10, took


# ---- item 15: slow-loris ---------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_client_trickling_bytes_is_cut_off_at_the_request_deadline(
    tmp_path: Path, start: Callable[..., Server], phase: str
) -> None:
    """A byte every 0.2 s keeps a per-recv timeout waiting for ever; the deadline does not."""
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    server = start(repo, "--request-timeout", "1.5")
    head = b"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    trickle = iter(head + b"x" * 1000 if phase == "body" else b"X-Pad: " + b"a" * 1000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        began = time.monotonic()
        raw.sendall(head if phase == "body" else head.split(b"Content-Length")[0])
        raw.settimeout(0.2)  # the pace: one byte each time the server stays silent 0.2 s
        answer = b""
        for _ in range(200):  # 40 s at most
            try:
                answer = raw.recv(64)
                break
            except TimeoutError:
                with contextlib.suppress(OSError):
                    raw.sendall(bytes([next(trickle)]))
        took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408 "), (answer, took)
    assert 1.4 <= took < 6, took
    assert server.request("GET", "/healthz") == (200, {"ok": True})


# ---- item 16: a cap on connections -----------------------------------------------------------


def test_connections_are_capped_and_healthz_keeps_answering(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")})
    server = start(repo, "--max-connections", "20", "--request-timeout", "2")
    with _connections(server.port, 40) as idle:  # connected, silent: no thread each
        assert server.request("GET", "/healthz") == (200, {"ok": True})
        assert _threads(server) < 20  # main, http, waiting room, workers: no 40 more
        with _connections(server.port, 20) as busy:
            for sock in busy:  # a request begun and never finished holds a thread
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            _, reply = poll(
                lambda: (answer := server.request("GET", "/healthz"))[0] == 503 and answer,
                10,
                "a request beyond the cap to get 503",
            )
            assert "connections" in reply["error"]
            assert _threads(server) < 20 + 20
            # the server's deadline frees them, with a 408 each
            assert all(_status_line(s).startswith(b"HTTP/1.1 408 ") for s in busy)
        poll(lambda: server.request("GET", "/healthz")[0] == 200, 10, "/healthz to answer again")
        assert len(idle) == 40
    stopped = time.monotonic()
    assert server.stop() == 130
    assert time.monotonic() - stopped < 15
    assert "Traceback" not in server.log_text()


# ---- what held -------------------------------------------------------------------------------


def test_ten_thousand_headers_get_431(tmp_path: Path, start: Callable[..., Server]) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(
            b"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
            + b"\r\n"
        )
        assert _status_line(raw).startswith(b"HTTP/1.1 431 ")
    assert server.request("GET", "/healthz") == (200, {"ok": True})


def test_a_chunked_100_mb_body_gets_411_unread(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(
            b"POST /hooks/retrain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        assert _status_line(raw).startswith(b"HTTP/1.1 411 ")
        with contextlib.suppress(OSError):
            for _ in range(100):  # 100 MiB, if the server read it all
                raw.sendall(chunk)
                sent += 1
    assert sent < 100  # the server stopped reading: the body was never taken in
    assert server.request("GET", "/healthz") == (200, {"ok": True})


def test_deep_json_and_invalid_utf8_get_400(tmp_path: Path, start: Callable[..., Server]) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    cases = [
        (b'{"a": ' * 100_000, "not valid JSON"),
        (b"[" * 900_000, "not valid JSON"),
        (b'{"a": "\xff\xfe"}', "not valid JSON"),
        (b'{"\xc3": 1}', "not valid JSON"),
        (b'{"d": ' + b"[" * 900 + b"]" * 900 + b"}", "nesting deeper than 64 levels"),
    ]
    for body, expected in cases:
        status, reply = server.request("POST", "/hooks/retrain", body, _signed(body))
        assert status == 400, (body[:20], reply)
        assert expected in reply["error"]
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
def test_three_thousand_idle_connections_leave_healthz_answering(
    tmp_path: Path, start: Callable[..., Server]
) -> None:
    server = start(make_repo(tmp_path, {"p.yaml": pipeline("retrain", "retrain", "busybox")}))
    baseline = _threads(server)
    with _connections(server.port, 3000):
        began = time.monotonic()
        assert server.request("GET", "/healthz") == (200, {"ok": True})
        took = time.monotonic() - began
        threads = _threads(server)
    print(f"3000 idle connections: /healthz in {took * 1000:.0f} ms, {threads} threads")
    assert took < 5
    assert threads <= baseline + 5
    stopped = time.monotonic()
    assert server.stop() == 130
    assert time.monotonic() - stopped < 15
