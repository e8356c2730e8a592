"""Issue 13, items 2-3: a run outlives its runner. Pointers name the store as configured, so a
run recorded on machine A resolves on machine B; approve, retry, the cache, show, logs and
`sluice outputs` work from B with a remote store, and refuse cleanly (exit 2, nothing changed)
when the outputs they need are not in B's store.

"Another machine" is a fresh clone of the same bare origin in another folder, with a fresh
`.sluice/` and another TMPDIR; only the origin and the S3 server (moto, a real process on
loopback) are shared. Real Docker (busybox steps), real git, the CLI in a process."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Bucket, git, make_repo, sluice

BRANCH = "sluice-results"

RELEASE = """
name: release
defaults: {{image: {image}, workspace: false}}
steps:
  - name: train
    run: 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n" > /sluice/outputs/model.txt'
  - name: evaluate
    needs: [train]
    workspace: true
    run: 'test -f ok && cat /sluice/inputs/train/model.txt > /sluice/outputs/score.txt'
  - name: deploy
    type: deployment
    needs: [train, evaluate]
    approval: true
    run: 'echo "deploying $(cat /sluice/inputs/train/model.txt)"'
"""


@dataclass
class Machine:
    """One runner: its own clone, `.sluice/` and TMPDIR; `env` for its engine processes."""

    repo: Path
    env: dict[str, str]

    def cli(
        self, *args: str, check: int | None = 0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = sluice(*args, repo=self.repo, env=self.env, process=True, cwd=cwd, timeout=300)
        assert "Traceback" not in done.stderr, done.stderr
        if check is not None:
            assert done.returncode == check, done.stdout + done.stderr
        return done

    def json(self, *args: str, check: int | None = 0) -> Any:
        return json.loads(self.cli(*args, "--json", check=check).stdout)


def machines(
    tmp_path: Path, image: str, store: str | None, env: dict[str, str]
) -> tuple[Machine, Machine, Path]:
    """Machine A (where the repository was made) and a fresh clone B; and the bare origin."""
    files = {"sluice.yaml": f"artifacts: {store}\n"} if store else {}
    repo = make_repo(
        tmp_path / "a", {"release.yaml": RELEASE.format(image=image)}, files, origin=True
    )
    origin = tmp_path / "a" / "origin.git"
    tmp = tmp_path / "a" / "tmp"
    tmp.mkdir()
    return Machine(repo, {**env, "TMPDIR": str(tmp)}), another(tmp_path, origin, "b", env), origin


def another(tmp_path: Path, origin: Path, name: str, env: dict[str, str]) -> Machine:
    """A fresh clone of `origin` in `tmp_path/name`, with its own TMPDIR."""
    clone, tmp = tmp_path / name / "repo", tmp_path / name / "tmp"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    tmp.mkdir()
    return Machine(clone, {**env, "TMPDIR": str(tmp)})


def on_origin(origin: Path, run_id: str) -> dict[str, Any]:
    text = git(origin, "show", f"{BRANCH}:runs/release/{run_id}/manifest.json")
    manifest: dict[str, Any] = json.loads(text)
    return manifest


@pytest.mark.docker
def test_paused_on_a_approved_on_b_from_s3(
    tmp_path: Path, busybox_image: str, s3_bucket: S3Bucket
) -> None:
    """Scenario 1; then show, logs and `sluice outputs` from a third, later clone."""
    store = f"{s3_bucket.url}/runs"
    a, b, origin = machines(tmp_path, busybox_image, store, s3_bucket.env)
    (a.repo / "ok").write_text("yes\n")
    paused = a.json("run", "release")
    assert paused["status"] == "waiting_approval"
    run_id = paused["run_id"]

    recorded = on_origin(origin, run_id)
    model = recorded["steps"]["train"]["outputs"]["model.txt"]
    assert model["store"] == store
    assert model["key"] == f"sha256/{model['sha256'][:2]}/{model['sha256'][2:]}"
    assert model["uri"] == f"{store}/{model['key']}"
    assert str(tmp_path) not in json.dumps(recorded)  # no path of the machine that ran it

    b.cli("approve", run_id, "--by", "bob")
    assert on_origin(origin, run_id)["steps"]["deploy"]["status"] == "succeeded"
    assert not (b.repo / ".sluice" / "artifacts").exists()  # B never had a local store

    # a third machine, cloned afterwards: show, logs and outputs, no `--fetch` needed
    c = another(tmp_path, origin, "c", s3_bucket.env)
    shown = c.json("show", run_id)
    assert shown["status"] == "succeeded" and shown["steps"]["train"]["outputs"]
    fetched = c.cli("outputs", run_id, "train", cwd=tmp_path / "c").stdout  # ./outputs/train
    content = (tmp_path / "c" / "outputs" / "train" / "model.txt").read_text()
    assert len(content) == 32 and "model.txt" in fetched
    assert f"deploying {content}" in c.cli("logs", run_id, "deploy").stdout  # B's log
    assert c.cli("logs", run_id, "evaluate").returncode == 0  # A's log
    listed = c.json("outputs", run_id, "train")
    assert [o["path"] for o in listed["outputs"]] == ["model.txt"]
    assert listed["outputs"][0]["sha256"] == model["sha256"] and listed["to"] is None
    c.cli("outputs", run_id, "train", "--to", str(tmp_path / "got"))
    assert (tmp_path / "got" / "model.txt").read_text() == content


@pytest.mark.docker
def test_failed_on_a_retried_on_b_reusing_a_outputs(
    tmp_path: Path, busybox_image: str, s3_bucket: S3Bucket
) -> None:
    """Scenario 2: `evaluate` fails on A (no `ok` file); B retries with it, and `train` is
    reused from A's run (verified in S3), not run again; C rejects the retry's release."""
    a, b, origin = machines(tmp_path, busybox_image, s3_bucket.url, s3_bucket.env)
    failed = a.json("run", "release", check=1)
    assert failed["status"] == "failed"
    run_id = failed["run_id"]
    sha = on_origin(origin, run_id)["steps"]["train"]["outputs"]["model.txt"]["sha256"]

    (b.repo / "ok").write_text("yes\n")
    retried = b.json("retry", run_id)
    assert retried["status"] == "waiting_approval"
    again = on_origin(origin, retried["run_id"])
    assert again["steps"]["train"]["status"] == "cached"
    assert again["steps"]["train"]["cached_from"] == run_id
    assert again["steps"]["train"]["outputs"]["model.txt"]["sha256"] == sha
    assert again["steps"]["evaluate"]["status"] == "succeeded"

    # and a third machine rejects the release the retry paused before
    c = another(tmp_path, origin, "c", s3_bucket.env)
    c.cli("reject", retried["run_id"], "--by", "carol")
    rejected = on_origin(origin, retried["run_id"])
    assert rejected["status"] == "failed" and rejected["approvals"][0]["by"] == "carol"


@pytest.mark.docker
def test_a_rerun_on_b_comes_from_the_cache_a_filled(
    tmp_path: Path, busybox_image: str, s3_bucket: S3Bucket
) -> None:
    """Scenario 3: every cacheable step of B's run is cached from A's; `--dry-run` says so."""
    a, b, _ = machines(tmp_path, busybox_image, s3_bucket.url, s3_bucket.env)
    for machine in (a, b):
        (machine.repo / "ok").write_text("yes\n")
    first = a.json("run", "release")
    assert first["status"] == "waiting_approval"

    dry = b.cli("run", "release", "--dry-run").stdout
    assert f"cached from {first['run_id']}" in dry, dry
    second = b.json("run", "release")
    steps = b.json("show", second["run_id"])["steps"]
    assert steps["train"]["status"] == steps["evaluate"]["status"] == "cached"
    assert steps["train"]["cached_from"] == steps["evaluate"]["cached_from"] == first["run_id"]


@pytest.mark.docker
def test_with_a_file_store_b_refuses_cleanly_and_nothing_is_lost(
    tmp_path: Path, busybox_image: str
) -> None:
    """Scenario 4: the default `file://` store stays on A. B's approve and retry exit 2
    before changing anything, naming the outputs, the store and the fix; a cached re-run on
    B runs the steps and `--dry-run` says why; A then approves the run as if nothing happened."""
    a, b, origin = machines(tmp_path, busybox_image, None, {})
    for machine in (a, b):
        (machine.repo / "ok").write_text("yes\n")
    run_id = a.json("run", "release")["run_id"]
    before = git(origin, "rev-parse", BRANCH)
    model = on_origin(origin, run_id)["steps"]["train"]["outputs"]["model.txt"]
    assert model["store"] == "file://.sluice/artifacts"  # relative to the repository root

    for verb in (("approve", run_id), ("retry", run_id)):
        refused = b.cli(*verb, check=2)
        said = refused.stderr
        assert "train/model.txt" in said and "evaluate/score.txt" in said, said
        assert "file://.sluice/artifacts" in said and "artifacts:" in said, said
        assert "Nothing was changed" in said and "run the command there" in said, said
    assert git(origin, "rev-parse", BRANCH) == before  # no record pushed
    assert b.json("show", run_id)["status"] == "waiting_approval"
    assert b.json("runs")[0]["run_id"] == run_id  # no retry run started

    dry = b.cli("run", "release", "--dry-run").stdout
    assert f"outputs of {run_id} are gone from the artifact store" in dry, dry
    rerun = b.json("run", "release")["steps"]
    assert rerun["train"]["status"] == rerun["evaluate"]["status"] == "succeeded"

    a.cli("approve", run_id)
    assert on_origin(origin, run_id)["status"] == "succeeded"


def _recorded(repo: Path, outputs: dict[str, Any], status: str = "succeeded") -> str:
    """A run recorded by hand on `repo`'s results branch, its `train` step with `outputs`;
    `waiting_approval`: with a `deploy` step after it, waiting."""
    from engine.adapters.git_results import ResultsStore
    from engine.core.manifest import RunManifest

    run_id = "20261101T100000Z-01d0e0"
    manifest = RunManifest.model_validate(
        {
            "run_id": run_id,
            "pipeline": "release",
            "pipeline_file": "pipelines/release.yaml",
            "pipeline_sha256": "0" * 64,
            "started_at": "2026-11-01T10:00:00.000Z",
            "status": status,
            "steps": {
                "train": {"status": "succeeded", "outputs": outputs},
                "deploy": {"status": status, "needs": ["train"]},
            },
        }
    )
    with ResultsStore(repo) as store:
        store.record_run(manifest)
    return run_id


def test_an_old_manifest_with_a_machine_path_still_reads(tmp_path: Path) -> None:
    """Old pointers (`uri: file:///<another machine's path>`) read, and `sluice outputs`
    finds the object by its sha256 in the store configured here."""
    from engine.adapters.artifacts import ArtifactStore

    repo = make_repo(tmp_path, {"release.yaml": "name: release\nsteps: []\n"}, commit="init")
    model = tmp_path / "model.txt"
    model.write_text("weights\n")
    pointer = ArtifactStore("file://.sluice/artifacts", repo).put_file(model)
    assert pointer.store == "file://.sluice/artifacts"  # new pointers: relative to the root
    old = f"file:///home/runner/work/x/.sluice/artifacts/{pointer.key}"
    run_id = _recorded(repo, {"model.txt": {"uri": old, "sha256": pointer.sha256, "size": 8}})

    shown = json.loads(sluice("show", run_id, "--json", repo=repo).stdout)
    assert shown["steps"]["train"]["outputs"]["model.txt"]["store"] == old.removesuffix(
        "/" + pointer.key
    )
    done = sluice("outputs", run_id, "train", "--to", str(tmp_path / "got"), repo=repo)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "got" / "model.txt").read_text() == "weights\n"


def test_a_pointer_whose_key_is_not_its_sha256_is_refused(tmp_path: Path) -> None:
    """The results branch is untrusted: a `key` other than the content key is refused."""
    repo = make_repo(tmp_path, {"release.yaml": "name: release\nsteps: []\n"}, commit="init")
    sha = "ab" * 32
    hostile = {"uri": "s3://b/x", "sha256": sha, "size": 1, "key": "../../etc/passwd"}
    with pytest.raises(ValueError, match="not the content key"):
        _recorded(repo, {"model.txt": hostile})


def test_approve_names_the_store_the_run_used_when_another_is_configured(tmp_path: Path) -> None:
    """B is configured with another store than the run's: exit 2, the run still waiting,
    the message naming the run's store and the setting to change."""
    repo = make_repo(tmp_path, {"release.yaml": "name: release\nsteps: []\n"}, commit="init")
    sha = "ab" * 32
    used = "s3://ml-artifacts/sluice"
    pointer = {"uri": f"{used}/sha256/ab/{sha[2:]}", "sha256": sha, "size": 5}
    run_id = _recorded(repo, {"model.txt": pointer}, status="waiting_approval")
    before = git(repo, "rev-parse", BRANCH)

    for verb in ("approve", "retry"):
        refused = sluice(verb, run_id, repo=repo)
        assert refused.returncode == 2, refused.stderr
        assert f"train/model.txt (sha256 {sha[:12]}" in refused.stderr
        assert f"configure the store the run used ({used}) as `artifacts:`" in refused.stderr
    assert git(repo, "rev-parse", BRANCH) == before
    shown = json.loads(sluice("show", run_id, "--json", repo=repo).stdout)
    assert shown["status"] == "waiting_approval"
    fetched = sluice("outputs", run_id, "train", "--to", str(tmp_path / "got"), repo=repo)
    assert fetched.returncode == 2 and not (tmp_path / "got").exists()
