"""Production history: deploys, `sluice promote`, `sluice rollback`, and the next run's baseline.

Real git repositories (a bare repository on disk as origin); runs go through the fake
runtime, except the last test, which goes through real Docker and the real CLI.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice
from test_recorded_runs import gate_pipeline

from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.adapters.git_results import ResultsStore
from engine.adapters.pipeline_files import find_pipeline
from engine.app.execution import execute, run_options
from engine.app.production import who
from engine.cli.common import State
from engine.core.config import RepoConfig
from engine.core.layout import production_entry
from engine.core.manifest import RunManifest, RunStatus, StepRecord, StepStatus, Trigger
from engine.core.production import KEPT, Action, Production, advance, deployer
from engine.ports import ContainerSpec
from engine.run.records import History

BRANCH = "sluice-results"
GATE = """
name: gate
params: {accuracy: 0.8, ship: true, fail_deploy: false}
baseline: {step: deploy}
defaults: {image: img}
steps:
  - name: evaluate
    cache: false
    run: evaluate
  - name: deploy
    type: deployment
    needs: [evaluate]
    when: "params.ship"
    run: deploy
"""

PLAIN = """
name: plain
defaults: {image: img}
steps:
  - name: deploy
    type: deployment
    run: deploy
"""


class Gate:
    """Runs of the `gate` pipeline through the fake runtime; remembers each deploy's baseline."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.baselines: list[dict[str, Any] | None] = []
        self.runtime = FakeRuntime({"evaluate": self._evaluate, "deploy": self._deploy})

    def _evaluate(self, spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        params = json.loads(files["/sluice/params.json"])
        metrics = json.dumps({"accuracy": params["accuracy"]}).encode()
        return FakeOutcome(files={"metrics.json": metrics})

    def _deploy(self, spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen = files.get("/sluice/baseline.json")
        self.baselines.append(json.loads(seen) if seen else None)
        failing = json.loads(files["/sluice/params.json"])["fail_deploy"]
        return FakeOutcome(exit_code=1 if failing else 0)

    def run(self, name: str = "gate", **params: Any) -> RunManifest:
        loaded = find_pipeline(self.repo, self.repo / "pipelines", name)
        assert loaded is not None
        options = run_options(
            self.repo,
            RepoConfig(),
            loaded,
            params={**loaded.pipeline.params, **params},
            trigger=Trigger(kind="manual"),
        )
        return execute(self.repo, loaded, options, runtime=self.runtime)


def cli(repo: Path, *args: str, code: int = 0) -> tuple[str, str]:
    """The CLI in this process, as the console script runs it; (stdout, stderr)."""
    done = sluice(*args, repo=repo)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout, done.stderr


def changed(repo: Path, *args: str) -> dict[str, Any]:
    out, _ = cli(repo, *args, "--json")
    result: dict[str, Any] = json.loads(out)
    return result


def on_origin(repo: Path) -> Production:
    """The production pointer as the remote holds it."""
    with ResultsStore(repo.parent / "origin.git", push=False) as store:
        found = History(store).pointer("gate")
    assert found is not None
    return found


@pytest.fixture(autouse=True)
def actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTOR", "ci-bot")


# ---- the lineage, as pure data ---------------------------------------------------------------


def step(current: Production | None, run_id: str, action: Action = "deploy") -> Production:
    seq = current.seq + 1 if current else 1
    return advance(
        current, pipeline="p", run_id=run_id, step="deploy", action=action, by="x", at="t", seq=seq
    )


def test_rollbacks_walk_back_and_a_rollback_to_an_outsider_pushes_it() -> None:
    p = step(step(step(None, "a"), "b"), "c", "promote")
    assert (p.lineage, p.previous, p.rollback_target()) == (["a", "b", "c"], "b", "b")
    p = step(p, "b", "rollback")
    assert (p.lineage, p.previous, p.rollback_target()) == (["a", "b"], "c", "a")
    p = step(p, "a", "rollback")
    assert (p.lineage, p.rollback_target()) == (["a"], None)
    p = step(p, "z", "rollback")  # `--to` a run that never was production
    assert (p.lineage, p.rollback_target()) == (["a", "z"], "a")
    assert [e.seq for e in p.history] == [6, 5, 4, 3, 2, 1]
    assert [e.action for e in p.history] == ["rollback"] * 3 + ["promote", "deploy", "deploy"]


def test_a_rollback_to_a_run_promoted_twice_goes_to_its_latest_place() -> None:
    p = step(step(step(step(None, "a"), "b"), "a", "promote"), "c")
    assert p.lineage == ["a", "b", "a", "c"]
    assert step(p, "a", "rollback").lineage == ["a", "b", "a"]


def test_the_pointer_keeps_a_bounded_history() -> None:
    p = None
    for n in range(KEPT + 30):
        p = step(p, f"r{n}")
    assert p is not None
    assert len(p.history) == len(p.lineage) == KEPT
    assert p.history[0].seq == KEPT + 30 and p.lineage[-1] == p.run_id == f"r{KEPT + 29}"


# ---- deploys, promote, rollback on real repositories -------------------------------------


def test_a_succeeded_deploy_becomes_production_and_is_pushed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    gate = Gate(repo)
    first, second = gate.run(), gate.run(accuracy=0.9)
    held = gate.run(ship=False)  # the deploy is skipped: production stays
    assert held.steps["deploy"].status is StepStatus.skipped
    assert held.baseline_run == second.run_id

    pointer = on_origin(repo)
    assert (pointer.run_id, pointer.action, pointer.previous) == (
        second.run_id,
        "deploy",
        first.run_id,
    )
    assert [(e.seq, e.run_id, e.previous) for e in pointer.history] == [
        (2, second.run_id, first.run_id),
        (1, first.run_id, None),
    ]
    assert {e.by for e in pointer.history} == {"manual run"}
    with ResultsStore(repo.parent / "origin.git", push=False) as store:
        entry = json.loads(store.read(production_entry("gate", 1)) or b"{}")
    assert entry["run_id"] == first.run_id and entry["action"] == "deploy"


def test_promote_makes_an_older_run_the_next_runs_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    gate = Gate(repo)
    older, newer = gate.run(), gate.run(accuracy=0.9)
    before = datetime.now(UTC)
    result = changed(repo, "promote", older.run_id, "--by", "alice")
    after = datetime.now(UTC)
    assert result["changed"] is True
    assert (result["previous"], result["production"]) == (newer.run_id, older.run_id)
    entry = result["entry"]
    assert (entry["action"], entry["by"], entry["seq"], entry["previous"]) == (
        "promote",
        "alice",
        3,
        newer.run_id,
    )
    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= at <= after

    pointer = on_origin(repo)  # pushed
    assert (pointer.run_id, pointer.by, pointer.at) == (older.run_id, "alice", entry["at"])
    shown, _ = cli(repo, "show", older.run_id)
    assert "production of gate (promote at" in shown
    assert "production of" not in cli(repo, "show", newer.run_id)[0]

    text, _ = cli(repo, "promote", older.run_id)  # already production
    assert "production stays" in text and "nothing recorded" in text
    assert on_origin(repo).seq == 3

    nxt = gate.run(accuracy=0.7)
    assert nxt.baseline_run == older.run_id
    seen = gate.baselines[-1]
    assert seen is not None and seen["run_id"] == older.run_id


def test_promote_refuses_runs_that_cannot_be_production(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE, "plain.yaml": PLAIN}, origin=True)
    gate = Gate(repo)
    good = gate.run()
    skipped = gate.run(ship=False)
    failed = gate.run(fail_deploy=True)
    assert failed.status is RunStatus.failed
    plain = gate.run("plain")
    tip = git(repo, "rev-parse", BRANCH)

    _, err = cli(repo, "promote", skipped.run_id, code=2)
    assert (
        f"run {skipped.run_id}'s deploy step was skipped (when is false: params.ship (params.ship = false))"
        in err
    )
    assert "promote a run whose deploy succeeded" in err
    assert "sluice runs --pipeline gate" in err
    _, err = cli(repo, "promote", failed.run_id, code=2)
    assert "deploy step failed" in err
    _, err = cli(repo, "promote", "20200101T000000Z-000000", code=2)
    assert "no run '20200101T000000Z-000000'" in err
    _, err = cli(repo, "promote", plain.run_id, code=2)
    assert "pipeline plain (pipelines/plain.yaml) has no `baseline:`" in err
    _, err = cli(repo, "rollback", "gate", "--to", plain.run_id, code=2)
    assert "is a run of plain, not of gate" in err
    _, err = cli(repo, "rollback", "plain", code=2)
    assert "has no `baseline:`" in err
    assert git(repo, "rev-parse", BRANCH) == tip  # nothing recorded
    assert on_origin(repo).run_id == good.run_id


def test_rollback_walks_back_one_production_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    _, err = cli(repo, "rollback", "gate", code=2)
    assert "gate has no production run yet" in err

    gate = Gate(repo)
    one = gate.run()
    _, err = cli(repo, "rollback", "gate", code=2)
    assert f"nothing earlier to roll back to: {one.run_id} is the first" in err
    two, three = gate.run(), gate.run()

    back = changed(repo, "rollback", "gate")
    assert (back["previous"], back["production"]) == (three.run_id, two.run_id)
    assert back["entry"]["action"] == "rollback" and back["entry"]["by"] == "ci-bot"
    back = changed(repo, "rollback", "pipelines/gate.yaml")  # a file path works too
    assert (back["previous"], back["production"]) == (two.run_id, one.run_id)
    _, err = cli(repo, "rollback", "gate", code=2)
    assert "nothing earlier to roll back to" in err and "sluice promote RUN_ID" in err

    text, _ = cli(repo, "rollback", "gate", "--to", three.run_id)
    assert f"gate: production {one.run_id} -> {three.run_id}" in text
    assert changed(repo, "rollback", "gate")["production"] == one.run_id

    pointer = on_origin(repo)
    assert [(e.action, e.run_id) for e in reversed(pointer.history)] == [
        ("deploy", one.run_id),
        ("deploy", two.run_id),
        ("deploy", three.run_id),
        ("rollback", two.run_id),
        ("rollback", one.run_id),
        ("rollback", three.run_id),
        ("rollback", one.run_id),
    ]
    assert gate.run().baseline_run == one.run_id


def test_a_clone_with_only_the_results_branch_can_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    gate = Gate(repo)
    older, newer = gate.run(), gate.run()
    clone = tmp_path / "results-only"
    git(tmp_path, "clone", "-q", "--single-branch", "--branch", BRANCH, str(tmp_path / "origin.git"), str(clone))  # fmt: skip
    git(clone, "checkout", "-q", "--detach")  # Sluice never moves a checked-out branch
    files = sorted(p.name for p in clone.iterdir())

    result = changed(clone, "promote", older.run_id)  # no pipeline file: step recorded
    assert (result["previous"], result["production"]) == (newer.run_id, older.run_id)
    assert on_origin(repo).run_id == older.run_id
    assert sorted(p.name for p in clone.iterdir()) == files

    cli(repo, "runs", "--fetch")  # the first repository catches up
    assert gate.run().baseline_run == older.run_id


def test_a_results_branch_from_before_production_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    runs = [f"20261124T10000{n}Z-00000{n}" for n in range(3)]
    with ResultsStore(repo) as store:  # as older engines recorded: no production pointer
        for n, rid in enumerate(runs):
            status = StepStatus.skipped if n == 1 else StepStatus.succeeded
            manifest = RunManifest(
                run_id=rid,
                pipeline="gate",
                pipeline_file="pipelines/gate.yaml",
                pipeline_sha256="0" * 64,
                started_at="2026-11-24T10:00:00.000Z",
                status=RunStatus.succeeded,
                steps={"deploy": StepRecord(status=status)},
            )
            index = {} if n == 1 else {"index/succeeded/gate/deploy": rid.encode()}
            store.record_run(manifest, extra=index)
        history = History(store)
        production = history.production("gate", "deploy")
        assert production is not None and production.run_id == runs[2]
        implied = history.production_state("gate", "deploy")
        assert implied is not None and (implied.seq, implied.lineage) == (0, [runs[0], runs[2]])

    back = changed(repo, "rollback", "gate")
    assert (back["previous"], back["production"], back["entry"]["seq"]) == (runs[2], runs[0], 1)
    assert on_origin(repo).lineage == [runs[0]]


def test_racing_runners_record_every_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    wanted = [f"20261124T1000{n:02d}Z-{n:06x}" for n in range(5)]
    clones = [tmp_path / f"runner{n}" for n in range(len(wanted))]
    for path in clones:
        git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(path))
    barrier = threading.Barrier(len(wanted))
    errors: list[BaseException] = []

    def promote(n: int) -> None:
        with ResultsStore(clones[n]) as store:
            barrier.wait()
            try:
                History(store).change_production(
                    "gate", "deploy", lambda _: (wanted[n], "deploy", "promote"), by=f"w{n}"
                )
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(len(wanted))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    pointer = on_origin(repo)
    assert sorted(e.seq for e in pointer.history) == list(range(1, len(wanted) + 1))
    assert sorted(pointer.lineage) == sorted(wanted)
    chain = [e.previous for e in reversed(pointer.history)]
    assert chain == [None, *[e.run_id for e in reversed(pointer.history)][:-1]]


def test_who_is_github_actor_then_git_user_then_the_os_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, {"gate.yaml": GATE}, origin=True)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    state = State(str(repo), None)
    assert who(state.repo) == "ci-bot"
    monkeypatch.delenv("GITHUB_ACTOR")
    assert who(state.repo) == getpass.getuser()
    git(repo, "config", "user.name", "Carol")
    assert who(state.repo) == "Carol"


# ---- real Docker, the real CLI ------------------------------------------------------------


@pytest.mark.docker
def test_deploy_promote_rollback_and_the_next_baseline_through_docker(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = gate_pipeline(
        busybox_image,
        """'grep -o "\\"run_id\\": \\"[^\\"]*\\"" /sluice/baseline.json || echo "no baseline"'""",
    )
    repo = make_repo(tmp_path, {"gate.yaml": pipeline}, origin=True)
    env = {**os.environ, "GITHUB_ACTOR": "", "LOGNAME": "docker-test", "USER": "docker-test"}
    env |= {"GIT_CONFIG_GLOBAL": str(tmp_path / "no-global"), "GIT_CONFIG_NOSYSTEM": "1"}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = sluice(*args, repo=repo, env=env, process=True, timeout=600)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, done.stderr
        return done

    def run(accuracy: float) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            cli("run", "gate", "-p", f"accuracy={accuracy}", "--json").stdout
        )
        return result

    first = run(0.8)
    second = run(0.9)
    assert second["baseline_run"] == first["run_id"]
    assert second["steps"]["deploy"]["status"] == "succeeded"
    assert on_origin(repo).run_id == second["run_id"]  # the deploy made it production

    promoted = json.loads(cli("promote", first["run_id"], "--by", "alice", "--json").stdout)
    assert (promoted["previous"], promoted["production"]) == (second["run_id"], first["run_id"])
    third = run(0.85)  # better than the promoted run, worse than the one rolled back from
    assert third["baseline_run"] == first["run_id"]
    assert third["steps"]["deploy"]["status"] == "succeeded"
    logged = cli("logs", third["run_id"], "deploy").stdout
    assert first["run_id"] in logged

    rolled = cli("rollback", "gate").stdout  # third -> first (the promotion stays)
    assert f"gate: production {third['run_id']} -> {first['run_id']}" in rolled
    rolled = cli("rollback", "gate").stdout  # first -> second, what it was promoted over
    assert f"-> {second['run_id']}" in rolled
    fourth = run(0.85)
    assert fourth["baseline_run"] == second["run_id"]
    assert fourth["steps"]["deploy"]["status"] == "skipped"

    pointer = on_origin(repo)
    assert [(e.action, e.by) for e in reversed(pointer.history)] == [
        ("deploy", "manual run"),
        ("deploy", "manual run"),
        ("promote", "alice"),
        ("deploy", "manual run"),
        ("rollback", "docker-test"),
        ("rollback", "docker-test"),
    ]


def test_a_deploy_is_credited_to_its_approver_else_to_its_trigger() -> None:
    manifest = RunManifest(
        run_id="20261124T100000Z-000001",
        pipeline="gate",
        pipeline_file="pipelines/gate.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        trigger=Trigger(kind="schedule"),
    )
    assert deployer(manifest, "deploy") == "schedule run"
    manifest.approvals = [
        {"step": "train", "decision": "approve", "by": "bob", "at": "t"},
        {"step": "deploy", "decision": "approve", "by": "alice", "at": "t"},
    ]
    assert deployer(manifest, "deploy") == "alice"
