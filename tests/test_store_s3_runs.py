"""Runs against an s3:// store on a real S3 server (moto on loopback), through the CLI with
real Docker steps: a store that stops answering mid-run never leaves a step `succeeded`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_repo, poll, start_s3_server


def _keys(endpoint: str, bucket: str) -> list[str]:
    with urllib.request.urlopen(f"{endpoint}/{bucket}", timeout=5) as answer:
        listing = answer.read().decode()
    return [part.split("</Key>")[0] for part in listing.split("<Key>")[1:]]


@pytest.mark.docker
def test_a_step_whose_outputs_could_not_be_uploaded_is_not_succeeded(
    tmp_path: Path, busybox_image: str
) -> None:
    """The S3 server stops after `first`'s outputs are stored and before `second`'s are:
    `second` is not recorded succeeded, the run exits 3, and the error names the store and
    the endpoint to check, with no traceback."""
    server = start_s3_server()
    try:
        bucket = server.bucket()
        repo = make_repo(
            tmp_path,
            {
                "p.yaml": f"""
            name: upload
            steps:
              - name: first
                image: {busybox_image}
                workspace: false
                run: echo one > $SLUICE_OUTPUTS/one.txt
              - name: second
                image: {busybox_image}
                workspace: false
                needs: [first]
                retries: {{limit: 2, backoff: 0.01s, outcomes: [failed, error]}}
                run: sleep 4; echo two > $SLUICE_OUTPUTS/two.txt
            """
            },
            files={"sluice.yaml": f"artifacts: s3://{bucket}/runs\n"},
        )
        env = {**os.environ, **server.env, "AWS_MAX_ATTEMPTS": "1", "PYTHONPATH": str(ROOT)}
        out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            run = subprocess.Popen(
                [sys.executable, "-m", "engine", "--repo", str(repo), "run", "upload", "--json"],
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
            try:
                poll(lambda: _keys(server.endpoint, bucket), 60, "first's output in the store")
                server.stop()  # while `second` sleeps in its container
                code = run.wait(120)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait(10)
    finally:
        server.stop()
    said = err.read_text()
    assert code == 3, said
    assert "Traceback" not in said
    manifest = json.loads(out.read_text())
    assert manifest["status"] == "failed" and manifest["engine_error"] is True
    assert manifest["steps"]["first"]["status"] == "succeeded"
    second = manifest["steps"]["second"]
    assert second["status"] != "succeeded" and not second.get("outputs")
    assert [a["outcome"] for a in second["attempts"]] == ["error"]  # the store's, not retried
    error = second["attempts"][0]["error"]
    assert f"artifact store s3://{bucket}/runs" in error and "does not answer" in error, error
    assert (
        f"check that the store is up and reachable at AWS_ENDPOINT_URL={server.endpoint}" in error
    )
