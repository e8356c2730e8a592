"""The results branch stays small: old runs move to `archive/` (both adapters), stay readable
from a fresh shallow clone, their cache entries go with them, and shallow clones race pushes
without losing each other's records."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, make_repo, sluice
from test_results import clone, make_origin
from test_results_branch_contract import Place

from engine.adapters import results_archive
from engine.adapters.git_results import ResultsStore, store_for
from engine.adapters.github_env import changed_files
from engine.core import layout
from engine.core.config import RepoConfig
from engine.core.manifest import Attempt, RunManifest, RunStatus, StepRecord, StepStatus
from engine.errors import ClaimLost
from engine.ports import ResultsBranch

KEEP, BATCH = 3, 2


@pytest.fixture(params=["git", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    made = Place(request.param, tmp_path)
    made.options = {"keep_runs": KEEP, "archive_batch": BATCH}
    yield made
    for branch in made.opened:
        branch.close()


def rid(n: int) -> str:
    """Run ids two weeks apart from 2026-10-01: they cross month folders."""
    month, day = divmod(n * 14, 28)
    return f"2026{10 + month:02d}{day + 1:02d}T100000Z-{n:06x}"


def run(
    n: int,
    status: RunStatus = RunStatus.succeeded,
    keys: dict[str, str] | None = None,
    cached: dict[str, str] | None = None,
) -> RunManifest:
    """Run `n` whose step `train` succeeded with cache key keys[...], or was `cached`."""
    steps = {
        name: StepRecord(status=StepStatus.succeeded, cache_key=key)
        for name, key in (keys or {}).items()
    }
    steps |= {
        name: StepRecord(status=StepStatus.cached, cache_key=key, cached_from=rid(0))
        for name, key in (cached or {}).items()
    }
    return RunManifest(
        run_id=rid(n),
        pipeline="churn",
        pipeline_file="pipelines/churn.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        status=status,
        steps=steps,
    )


def record(branch: ResultsBranch, manifest: RunManifest, cache: bool = False) -> str:
    extra: dict[str, bytes | None] = {}
    for name, step in manifest.steps.items():
        if cache and step.cache_key and step.status is StepStatus.succeeded:
            entry = {"run_id": manifest.run_id, "pipeline": "churn", "step": name}
            extra[layout.cache_entry(step.cache_key)] = json.dumps(entry).encode()
    logs = {layout.log_name("train", 1): f"log of {manifest.run_id}\n".encode()}
    return branch.commit(*layout.run_record(manifest, logs, extra))


def at_tip(branch: ResultsBranch) -> list[str]:
    return branch.list_dir(layout.pipeline_runs("churn"))


def archived(branch: ResultsBranch) -> dict[str, str]:
    """Run id -> holding commit, from every archive index."""
    found = {}
    for month in branch.list_dir("archive/churn"):
        for name in branch.list_dir(f"archive/churn/{month}"):
            index = json.loads(branch.read(f"archive/churn/{month}/{name}") or b"{}")
            found |= dict.fromkeys(index["runs"], index["commit"])
    return found


# -- both adapters ---------------------------------------------------------------------


def test_old_runs_move_to_the_archive_in_batches_and_stay_readable(place: Place) -> None:
    branch = place.clone()
    for n in range(KEEP + BATCH):
        record(branch, run(n))
    assert len(at_tip(branch)) == KEEP + BATCH  # not over the threshold yet
    assert branch.list_dir("archive") == []
    record(branch, run(5))
    assert at_tip(branch) == [rid(n) for n in range(2, 6)]  # the oldest batch moved
    index = archived(branch)
    assert sorted(index) == [rid(0), rid(1)]
    holder = index[rid(0)]
    assert branch.read(layout.manifest("churn", rid(0)), at=holder) is not None
    # A month folder per batch part: rid(0) is October's, rid(1) too (day 15).
    assert branch.list_dir("archive/churn") == ["202610"]
    # Every reader finds the archived runs.
    old = branch.manifest(rid(0))
    assert old is not None and old.run_id == rid(0)
    assert branch.log(rid(1), "train", 1) == f"log of {rid(1)}\n".encode()
    assert branch.read(layout.log("churn", rid(0), "train.1.log")) == f"log of {rid(0)}\n".encode()
    assert branch.list_dir(f"runs/churn/{rid(0)}/logs") == ["train.1.log"]
    assert branch.read(layout.log("churn", rid(0), "nope.1.log")) is None
    assert branch.manifest("20991231T000000Z-ffffff") is None
    assert [m.run_id for m in branch.runs("churn", limit=10)] == [rid(n) for n in range(5, -1, -1)]
    assert [m.run_id for m in branch.runs(limit=5)] == [rid(n) for n in range(5, 0, -1)]
    assert [m.run_id for m in branch.runs(limit=2)] == [rid(5), rid(4)]
    # The next batch: 2 more runs over the threshold again.
    for n in range(6, 8):
        record(branch, run(n))
    assert at_tip(branch) == [rid(n) for n in range(4, 8)]
    assert sorted(archived(branch)) == [rid(n) for n in range(4)]
    assert sorted(branch.list_dir("archive/churn")) == ["202610", "202611"]
    assert branch.manifest(rid(3)) is not None


def test_production_runs_and_unfinished_runs_stay_at_the_tip(place: Place) -> None:
    branch = place.clone()
    record(branch, run(0))
    record(branch, run(1, RunStatus.waiting_approval))
    pointer = {"run_id": rid(2), "step": "train", "lineage": [rid(0), rid(2)], "history": []}
    branch.commit({layout.production("churn"): json.dumps(pointer).encode()}, "production")
    for n in range(2, 8):
        record(branch, run(n))
    tip = at_tip(branch)
    assert {rid(0), rid(1), rid(2)} <= set(tip)
    assert sorted(archived(branch)) == [rid(3), rid(4)]
    assert len(tip) == KEEP + BATCH + 1  # 3 kept by production or unfinished, then 3 newest


def test_cache_entries_leave_with_the_runs_that_last_used_them(place: Place) -> None:
    branch = place.clone()
    record(branch, run(0, keys={"train": "aa" + "0" * 62, "prep": "bb" + "0" * 62}), cache=True)
    record(branch, run(1, keys={"train": "cc" + "0" * 62}), cache=True)
    old = {"run_id": rid(1), "pipeline": "churn", "step": "train"}  # as older branches hold it
    branch.commit({layout.old_cache_entry("cc" + "0" * 62): json.dumps(old).encode()}, "old")
    for n in range(2, 5):
        record(branch, run(n, keys={"train": f"{n:02x}" + "1" * 62}), cache=True)
    # The newest run reused prep's entry: it stays while that run is at the tip.
    record(branch, run(5, cached={"prep": "bb" + "0" * 62}))
    assert sorted(archived(branch)) == [rid(0), rid(1)]
    assert branch.read(layout.cache_entry("aa" + "0" * 62)) is None
    assert branch.read(layout.cache_entry("cc" + "0" * 62)) is None
    assert branch.read(layout.old_cache_entry("cc" + "0" * 62)) is None
    kept = json.loads(branch.read(layout.cache_entry("bb" + "0" * 62)) or b"{}")
    assert kept["run_id"] == rid(0)  # its run is archived, and still found from it
    assert branch.manifest(kept["run_id"]) is not None
    assert branch.read(layout.cache_entry("02" + "1" * 62)) is not None


def test_two_writers_archiving_the_same_batch_record_it_once(place: Place) -> None:
    place.options = {}
    first = place.clone()
    for n in range(KEEP + BATCH + 1):  # over the threshold, nobody archived yet
        record(first, run(n))
    place.options = {"keep_runs": KEEP, "archive_batch": BATCH}
    b, c = place.clone(), place.clone()
    b.fetch()
    c.fetch()
    tip = b.tip()
    assert tip is not None and tip == c.tip()
    by_b = results_archive.plan(b, "churn", tip, keep=KEEP, batch=BATCH)
    by_c = results_archive.plan(c, "churn", tip, keep=KEEP, batch=BATCH)
    assert by_b is not None and by_c is not None and by_b == by_c
    b.commit(by_b[0], "archive by b", expect_absent=by_b[1])
    with pytest.raises(ClaimLost):
        c.commit(by_c[0], "archive by c", expect_absent=by_c[1])
    c.fetch()
    assert sorted(archived(c)) == [rid(0), rid(1)]
    assert at_tip(c) == [rid(n) for n in range(2, 6)]
    assert {m.run_id for m in c.runs("churn", limit=20)} == {rid(n) for n in range(6)}


def test_without_keep_runs_every_run_stays(place: Place) -> None:
    place.options = {}
    branch = place.clone()
    for n in range(8):
        record(branch, run(n))
    assert len(at_tip(branch)) == 8


# -- git: shallow clones -----------------------------------------------------------------


def shallow_store(origin: Path, path: Path) -> ResultsStore:
    """A runner's clone as actions/checkout makes it: main only, depth 1 (over file://: a
    plain local clone would copy every object)."""
    url = origin.as_uri()
    git(origin.parent, "clone", "-q", "--depth=1", "--single-branch", "-b", "main", url, str(path))
    return ResultsStore(path, keep_runs=KEEP, archive_batch=BATCH)


def test_a_fresh_shallow_clone_reads_archived_runs_fetching_their_commit(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    with ResultsStore(clone(origin, tmp_path / "a"), keep_runs=KEEP, archive_batch=BATCH) as a:
        for n in range(8):
            record(a, run(n))
        holder = archived(a)[rid(0)]
    fresh = tmp_path / "fresh"
    with shallow_store(origin, fresh) as store:
        store.fetch()
        assert git(fresh, "rev-parse", "--is-shallow-repository") == "true"
        count = git(fresh, "rev-list", "--count", "refs/remotes/origin/sluice-results")
        assert count == "1"  # the tip only
        assert not subprocess_ok(fresh, "cat-file", "-e", holder)
        old = store.manifest(rid(0))
        assert old is not None and old.run_id == rid(0)
        assert subprocess_ok(fresh, "cat-file", "-e", holder)  # fetched on demand
        assert store.log(rid(1), "train", 1) == f"log of {rid(1)}\n".encode()
        assert [m.run_id for m in store.runs("churn", limit=8)] == [
            rid(n) for n in range(7, -1, -1)
        ]
        # Recording from the shallow clone pushes, and archives again.
        record(store, run(8))
        record(store, run(9))
    with ResultsStore(clone(origin, tmp_path / "check")) as check:
        check.fetch()
        assert sorted(archived(check)) == [rid(n) for n in range(6)]
        assert check.manifest(rid(5)) is not None


def subprocess_ok(repo: Path, *args: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True).returncode == 0


def test_shallow_clones_racing_pushes_lose_nothing(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    with ResultsStore(clone(origin, tmp_path / "seed2"), push=True) as seed:
        seed.commit({"state": b"0", "gone": b"deleted later"}, "start")
    a, b = shallow_store(origin, tmp_path / "a"), shallow_store(origin, tmp_path / "b")
    with a, b:
        a.fetch()
        b.fetch()  # both at the same shallow tip
        for n in range(3):
            a.commit({f"from-a/{n}": b"a", "state": f"a{n}".encode()}, f"a {n}")
        a.commit({"gone": None}, "a deletes")  # as an archive move does
        # b's next fetch must go deep enough to find the common base: make its remote-tracking
        # ref a depth-1 graft of the new tip, as a first fetch would leave it.
        git(
            tmp_path / "b", "fetch", "-q", "--depth=1", "origin",
            "+refs/heads/sluice-results:refs/remotes/origin/sluice-results",
        )  # fmt: skip
        b.commit({"from-b/0": b"b"}, "b 0")
        a.commit({"from-a/3": b"a"}, "a 3")
        b.commit({"from-b/1": b"b"}, "b 1")
    with ResultsStore(clone(origin, tmp_path / "check")) as check:
        check.fetch()
        assert check.list_dir("from-a") == ["0", "1", "2", "3"]
        assert check.list_dir("from-b") == ["0", "1"]
        assert check.read("state") == b"a2"  # b never re-applied its older copy of `state`
        assert check.read("gone") is None  # nor brought back what a deleted
        log = git(tmp_path / "check", "rev-list", "--count", "origin/sluice-results")
        assert int(log) == 1 + 5 + 2  # the seed's, a's and b's: none lost, none doubled


# -- through the CLI, from a runner's fresh shallow clone ------------------------------------

RETRIED = """
name: retried
defaults: {{image: {image}}}
steps:
  - name: train
    run: 'echo training; test -e go && echo "{{\\"n\\": 1}}" > /sluice/outputs/metrics.json'
"""
BOUNDED = "results: {keep_runs: 1, archive_batch: 1}\n"


def no_github() -> dict[str, str | None]:
    return {k: None for k in os.environ if k.startswith("GITHUB_")}


def runner_clone(tmp_path: Path, name: str) -> Path:
    """A clone as actions/checkout makes it (depth 1, main only)."""
    path = tmp_path / name
    url = (tmp_path / "origin.git").as_uri()
    git(tmp_path, "clone", "-q", "--depth=1", "--single-branch", "-b", "main", url, str(path))
    return path


def test_show_and_logs_of_an_archived_run_from_a_fresh_shallow_clone(tmp_path: Path) -> None:
    pipeline = "name: churn\nsteps:\n  - {name: train, image: busybox, run: echo}\n"
    seed = make_repo(
        tmp_path, {"churn.yaml": pipeline}, files={"sluice.yaml": BOUNDED}, name="seed", origin=True
    )
    config = RepoConfig.model_validate({"results": {"keep_runs": 1, "archive_batch": 1}})
    store = store_for(seed, config)
    assert store is not None
    with store:
        for n in range(3):
            attempt = Attempt(number=1, outcome="succeeded", started_at="2026-11-24T10:00:00Z")
            step = StepRecord(status=StepStatus.succeeded, attempts=[attempt])
            record(store, run(n).model_copy(update={"steps": {"train": step}}))
        assert at_tip(store) == [rid(1), rid(2)]  # over keep_runs + archive_batch: 1 moved
    repo = runner_clone(tmp_path, "runner")
    shown = sluice("show", rid(0), "--json", "--fetch", repo=repo, env=no_github())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == rid(0)
    logs = sluice("logs", rid(0), "train", repo=repo, env=no_github())
    assert logs.returncode == 0, logs.stderr
    assert f"log of {rid(0)}" in logs.stdout
    listed = sluice("runs", "--limit", "5", "--json", repo=repo, env=no_github())
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [rid(2), rid(1), rid(0)]
    assert git(repo, "rev-parse", "--is-shallow-repository") == "true"


@pytest.mark.docker
def test_retry_of_an_archived_run_from_a_fresh_shallow_clone(
    tmp_path: Path, busybox_image: str
) -> None:
    seed = make_repo(
        tmp_path,
        {"retried.yaml": RETRIED.format(image=busybox_image)},
        files={"sluice.yaml": BOUNDED},
        name="seed",
        origin=True,
    )
    assert seed.exists()
    first = runner_clone(tmp_path, "first")
    ids = []
    for _ in range(3):
        done = sluice("run", "retried", "--json", repo=first, env=no_github())
        assert done.returncode == 1, done.stderr  # no `go` file: train fails
        ids.append(json.loads(done.stdout)["run_id"])
    later = runner_clone(tmp_path, "later")
    tip = git(later, "ls-remote", "origin", "refs/heads/sluice-results").split()[0]
    git(later, "fetch", "-q", "--depth=1", "origin", tip)
    listed = git(later, "ls-tree", "--name-only", f"{tip}:runs/retried")
    # Archived: not at the tip any more. The oldest by id (ids sort by their start second,
    # then by their random part: two runs started within one second may swap).
    oldest = min(ids)
    assert oldest not in listed.split() and len(listed.split()) == 2
    (later / "go").write_text("")
    retry = sluice("retry", oldest, "--json", repo=later, env=no_github())
    assert retry.returncode == 0, retry.stderr
    again = json.loads(retry.stdout)
    assert again["steps"]["train"]["status"] == "succeeded"
    assert again["run_id"] != oldest and again["trigger"]["event"] == oldest


# -- a push's changed files from a depth-1 checkout ---------------------------------------------


def test_changed_files_fetches_the_pushs_before_commit_on_demand(tmp_path: Path) -> None:
    seed = make_repo(tmp_path, files={"a.txt": "a\n", "b.txt": "b\n"}, name="seed", origin=True)
    before = git(seed, "rev-parse", "HEAD")
    (seed / "b.txt").write_text("changed\n")
    (seed / "c.txt").write_text("new\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "change")
    git(seed, "push", "-q", "origin", "main")
    after = git(seed, "rev-parse", "HEAD")
    repo = runner_clone(tmp_path, "runner")
    assert not subprocess_ok(repo, "cat-file", "-e", f"{before}^{{commit}}")
    assert changed_files(repo, before, after) == ["b.txt", "c.txt"]
    assert changed_files(repo, "e" * 40, after) is None  # the remote has no such commit


def test_a_partial_first_fetch_takes_trees_and_reads_blobs_in_one_batch(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    git(origin, "config", "uploadpack.allowFilter", "true")
    with ResultsStore(clone(origin, tmp_path / "a")) as a:
        for n in range(6):
            record(a, run(n))
    fresh = tmp_path / "fresh"
    url = origin.as_uri()
    git(tmp_path, "clone", "-q", "--depth=1", "--single-branch", "-b", "main", url, str(fresh))
    packs = fresh / ".git" / "objects" / "pack"
    with ResultsStore(fresh, partial=True) as store:
        store.fetch()
        assert git(fresh, "config", "remote.origin.promisor") == "true"
        before = len(list(packs.glob("*.pack")))
        listed = store.runs("churn", limit=5)
        assert [m.run_id for m in listed] == [rid(n) for n in range(5, 0, -1)]
        assert len(list(packs.glob("*.pack"))) == before + 1  # one fetch for five manifests
        assert store.log(rid(0), "train", 1) == f"log of {rid(0)}\n".encode()


def test_a_writer_that_does_not_push_never_archives_onto_an_unpushed_commit(
    place: Place,
) -> None:
    writer = place.clone()
    local = place.writer(writer, push=False)
    for n in range(8):
        record(local, run(n))
    assert len(at_tip(local)) == 8  # a remote exists, and these commits are not on it
    record(writer, run(8))  # pushes all of them: now the archive may name them
    assert sorted(archived(writer)) == [rid(n) for n in range(4)]  # two batches at once
    assert len(at_tip(writer)) == KEEP + BATCH
