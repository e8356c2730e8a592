"""Params and payloads given on the command line: a lone surrogate is refused, never a traceback."""

from __future__ import annotations

from pathlib import Path

from conftest import make_repo, sluice

PIPELINE = """\
name: p
params: {x: "a"}
steps:
  - name: s
    image: sluice-test/busybox:1
    run: echo hi
"""


def test_params_json_with_a_lone_surrogate_exits_2_before_anything_runs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": PIPELINE})
    done = sluice("run", "p", "--params-json", '{"x": "\\ud800"}', "--no-push", repo=repo)
    assert done.returncode == 2, done.stderr
    assert "lone surrogate" in done.stderr and "Traceback" not in done.stderr
    assert not (repo / ".sluice" / "runs").exists() or not any(
        (repo / ".sluice" / "runs").iterdir()
    )


def test_a_param_given_as_undecodable_bytes_exits_2(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": PIPELINE})
    # what Python makes of a command-line argument that is not UTF-8 (surrogateescape)
    done = sluice("run", "p", "-p", "x=\udced\udca0\udc80", "--no-push", repo=repo)
    assert done.returncode == 2, done.stderr
    assert "lone surrogate" in done.stderr


def test_dispatch_payload_with_a_lone_surrogate_exits_2(tmp_path: Path) -> None:
    done = sluice(
        "dispatch",
        "octo/repo",
        "--event-type",
        "t",
        "--payload",
        '{"a": "\\udc00"}',
        env={"GITHUB_TOKEN": "x", "GITHUB_API_URL": "http://127.0.0.1:9"},
    )
    assert done.returncode == 2, done.stderr
    assert "lone surrogate" in done.stderr
