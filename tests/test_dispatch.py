"""`sluice dispatch` against a loopback stand-in for GitHub's REST API: requests, errors, loop guard."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from conftest import FakeGitHub, sluice

from engine.adapters.github_api import API_VERSION, HOPS_KEY


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token, hop count, event or proxy from the machine running the tests."""
    for name in (
        "GITHUB_TOKEN",
        "GITHUB_API_URL",
        "GITHUB_EVENT_NAME",
        "GITHUB_EVENT_PATH",
        "SLUICE_DISPATCH_HOPS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def dispatch(*args: str) -> tuple[int, str]:
    """Run the real entry point in-process: (exit code, stderr)."""
    done = sluice("dispatch", *args)
    return done.returncode, done.stderr


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, github: FakeGitHub) -> str:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test123")
    monkeypatch.setenv("GITHUB_API_URL", github.url + "/api/v3/")  # as on GitHub Enterprise
    return "ghp_test123"


def test_sends_githubs_documented_request(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, token: str
) -> None:
    code, err = dispatch(
        "octo-org/churn",
        "--event-type",
        "retrain-churn",
        "--payload",
        '{"params": {"n_estimators": 200}}',
    )
    assert code == 0, err
    assert "dispatched 'retrain-churn' to octo-org/churn" in err
    [sent] = github.requests
    assert sent.method == "POST"
    assert sent.path == "/api/v3/repos/octo-org/churn/dispatches"
    assert sent.headers["accept"] == "application/vnd.github+json"
    assert sent.headers["authorization"] == f"Bearer {token}"
    assert sent.headers["x-github-api-version"] == API_VERSION == "2022-11-28"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {
        "event_type": "retrain-churn",
        "client_payload": {"params": {"n_estimators": 200}, HOPS_KEY: 1},
    }


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        (401, {"message": "Bad credentials"}, "GITHUB_TOKEN is invalid or expired"),
        (403, {"message": "Resource not accessible by integration"}, "contents: write"),
        (404, {"message": "Not Found"}, "repository octo-org/churn not found, or the token"),
        (
            422,
            {
                "message": "Invalid request.",
                "errors": ["No more than 10 properties are allowed; 11 were supplied."],
            },
            "GitHub rejected the dispatch (422): Invalid request.; No more than 10 properties",
        ),
        (502, {"message": "Server Error"}, "GitHub answered 502"),
    ],
)
def test_refusals_become_clear_errors_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    github: FakeGitHub,
    token: str,
    status: int,
    reply: dict[str, object],
    expected: str,
) -> None:
    github.status, github.reply = status, reply
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 1
    assert expected in err
    assert "Traceback" not in err
    assert token not in err
    assert len(github.requests) == 1


def test_a_redirect_is_not_followed_with_the_token(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, token: str
) -> None:
    github.status = 301
    github.headers = {"Location": "http://127.0.0.1:9/repos/someone-else/churn/dispatches"}
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 1
    assert "not followed" in err
    assert "someone-else" in err
    assert len(github.requests) == 1


def test_connection_refused_exits_1_naming_the_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        monkeypatch.setenv("GITHUB_TOKEN", "t")
        monkeypatch.setenv("GITHUB_API_URL", url)
        code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 1
    assert f"cannot reach {url}/repos/octo-org/churn/dispatches" in err


def test_no_answer_within_the_timeout_exits_1(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, token: str
) -> None:
    github.stall = threading.Event()
    code, err = dispatch("octo-org/churn", "--event-type", "retrain", "--timeout", "0.3")
    assert code == 1
    assert "within 0.3s" in err


def test_missing_token_exits_2_before_sending(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 2
    assert "GITHUB_TOKEN is not set" in err
    assert github.requests == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--payload", json.dumps({f"k{i}": i for i in range(11)})], "11 top-level keys"),
        # sluice_hops takes the tenth key
        (["--payload", json.dumps({f"k{i}": i for i in range(10)})], "at most 9"),
        (["--payload", '{"sluice_hops": 0}'], "set by Sluice"),
        (["--payload", "[1, 2]"], "must be a JSON object"),
        (["--payload", "{nope"], "not valid JSON"),
        (["--event-type", "x" * 101], "1 to 100 characters"),
        (["--event-type", ""], "1 to 100 characters"),
    ],
)
def test_invalid_input_exits_2_before_sending(
    capsys: pytest.CaptureFixture[str],
    github: FakeGitHub,
    token: str,
    args: list[str],
    expected: str,
) -> None:
    if "--event-type" not in args:
        args = [*args, "--event-type", "retrain"]
    code, err = dispatch("octo-org/churn", *args)
    assert code == 2
    assert expected in err
    assert github.requests == []


def test_nine_keys_go_out_as_ten(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, token: str
) -> None:
    nine = {f"k{i}": i for i in range(9)}
    code, err = dispatch("o/r", "--event-type", "e", "--payload", json.dumps(nine))
    assert code == 0, err
    sent = github.requests[0].json()
    assert isinstance(sent, dict)
    assert len(sent["client_payload"]) == 10


@pytest.mark.parametrize("repository", ["churn", "a/b/c", "-x/churn", "octo/..", "octo/ch urn"])
def test_a_malformed_repository_exits_2(
    capsys: pytest.CaptureFixture[str], github: FakeGitHub, token: str, repository: str
) -> None:
    code, err = dispatch(repository, "--event-type", "retrain")
    assert code == 2
    assert "OWNER/NAME" in err
    assert github.requests == []


def test_hop_guard_counts_up_then_refuses(
    capsys: pytest.CaptureFixture[str],
    github: FakeGitHub,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_DISPATCH_HOPS", "2")
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 0, err
    sent = github.requests[0].json()
    assert isinstance(sent, dict)
    assert sent["client_payload"][HOPS_KEY] == 3

    monkeypatch.setenv("SLUICE_DISPATCH_HOPS", "3")
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 1
    assert "refusing to dispatch" in err
    assert len(github.requests) == 1

    code, err = dispatch("octo-org/churn", "--event-type", "retrain", "--max-hops", "4")
    assert code == 0, err
    assert len(github.requests) == 2

    monkeypatch.setenv("SLUICE_DISPATCH_HOPS", "many")
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 2
    assert "SLUICE_DISPATCH_HOPS='many'" in err


def test_hop_guard_reads_the_dispatch_that_started_the_workflow(
    capsys: pytest.CaptureFixture[str],
    github: FakeGitHub,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A workflow step calling `sluice dispatch` is guarded even when nothing set the variable."""
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"action": "retrain", "client_payload": {"params": {}, HOPS_KEY: 3}})
    )
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "repository_dispatch")
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 1
    assert "a chain of 3 dispatch(es)" in err
    assert github.requests == []

    monkeypatch.setenv("GITHUB_EVENT_NAME", "push")  # the file is only a dispatch's in a dispatch
    code, err = dispatch("octo-org/churn", "--event-type", "retrain")
    assert code == 0, err
