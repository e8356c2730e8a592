"""One contract for every ResultsBranch: the git one (a bare origin, clones in tmp_path) and
the in-memory one. Compare-and-swap commits, expect-absent claims, reads at a ref, listing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git
from test_results import race

from engine.adapters.git_results import ResultsStore
from engine.adapters.memory_results import MemoryRepository, MemoryResultsBranch
from engine.core import layout
from engine.core.manifest import RunManifest, RunStatus, StepRecord, StepStatus
from engine.errors import ClaimLost, UsageError
from engine.ports import ResultsBranch


class Place:
    """Where writers live: `clone()` a new runner (its own clone of the shared origin),
    `writer(of)` another writer in the same clone as `of` (pushing only if `push`)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.opened: list[ResultsBranch] = []
        self.options: dict[str, int] = {}  # keep_runs, archive_batch: the bounded tip
        self._clones = 0
        if kind == "git":
            self.origin_path = tmp_path / "origin.git"
            git(tmp_path, "init", "-q", "--bare", str(self.origin_path))
        else:
            self.origin = MemoryRepository()
        self._where: dict[int, Path | MemoryRepository] = {}

    def clone(self) -> ResultsBranch:
        self._clones += 1
        if self.kind == "git":
            path = self.tmp_path / f"clone{self._clones}"
            git(self.tmp_path, "clone", "-q", str(self.origin_path), str(path))
            return self._open(path)
        return self._open(MemoryRepository())

    def writer(self, of: ResultsBranch, *, push: bool = True) -> ResultsBranch:
        return self._open(self._where[id(of)], push)

    def _open(self, where: Path | MemoryRepository, push: bool | str = "auto") -> ResultsBranch:
        branch: ResultsBranch
        if isinstance(where, Path):
            branch = ResultsStore(where, push=push, **self.options)
        else:
            branch = MemoryResultsBranch(where, remote=self.origin, push=push, **self.options)
        self._where[id(branch)] = where
        self.opened.append(branch)
        return branch


@pytest.fixture(params=["git", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    made = Place(request.param, tmp_path)
    yield made
    for branch in made.opened:
        branch.close()


def manifest(run_id: str, pipeline: str = "churn") -> RunManifest:
    return RunManifest(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_file=f"pipelines/{pipeline}.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        status=RunStatus.succeeded,
    )


# -- reading and listing -----------------------------------------------------------------


def test_an_empty_branch_reads_nothing(place: Place) -> None:
    branch = place.clone()
    assert branch.tip() is None
    assert branch.read("a.txt") is None
    assert branch.list_dir("") == []
    assert branch.runs() == []
    assert branch.manifest("20261124T100000Z-000001") is None


def test_reads_and_lists_the_tip_in_gits_order(place: Place) -> None:
    branch = place.clone()
    commit = branch.commit(
        {"a/b.txt": b"b", "a/c/d.txt": b"d", "a/c.txt": b"c", "a-b": b"dash", "top": b"t"},
        "files",
    )
    assert branch.tip() == commit
    assert branch.read("a/c/d.txt") == b"d"
    assert branch.read("/a/b.txt/") == b"b"  # slashes around a path are ignored
    assert branch.read("a") is None  # a folder is not a file
    assert branch.read("a/missing.txt") is None
    # git sorts a folder as if its name ended in '/': "a-b" < "a/" ; "c.txt" < "c/".
    assert branch.list_dir("") == ["a-b", "a", "top"]
    assert branch.list_dir("a") == ["b.txt", "c.txt", "c"]
    assert branch.list_dir("a/b.txt") == []  # a file is not a folder
    assert branch.list_dir("nowhere") == []


def test_reads_at_a_ref_see_that_commit_not_the_tip(place: Place) -> None:
    branch = place.clone()
    first = branch.commit({"state.json": b"1", "gone/x": b"x"}, "one")
    second = branch.commit({"state.json": b"2", "gone/x": None, "new": b"n"}, "two")
    assert first != second
    assert branch.read("state.json") == b"2"
    assert branch.read("state.json", at=first) == b"1"
    assert branch.read("new", at=first) is None
    assert branch.list_dir("", at=first) == ["gone", "state.json"]
    assert branch.list_dir("", at=second) == ["new", "state.json"]  # an emptied folder goes


def test_a_commit_deletes_and_rejects_paths_git_cannot_hold(place: Place) -> None:
    branch = place.clone()
    branch.commit({"keep": b"k", "drop/me": b"d"}, "add")
    branch.commit({"drop/me": None}, "delete")
    assert branch.list_dir("") == ["keep"]
    for bad in ("a/../b", "a//b", ".git/config", "a/.GIT/x", "a\nb"):
        with pytest.raises(UsageError, match="not a valid path"):
            branch.commit({bad: b"x"}, "bad")
    with pytest.raises(UsageError, match="both a file and a folder"):
        branch.commit({"x": b"file", "x/y": b"under it"}, "both")
    assert branch.list_dir("") == ["keep"]


def test_runs_newest_first_and_each_run_by_its_id(place: Place) -> None:
    branch = place.clone()
    ids = [f"20261124T10{m:02d}00Z-{m:06x}" for m in range(5)]
    for n, run_id in enumerate(ids):
        pipeline = "churn" if n % 2 == 0 else "fraud"
        logs = {"train.1.log": f"log {n}\n".encode()}
        branch.commit(*layout.run_record(manifest(run_id, pipeline), logs, {}))
    branch.commit({layout.manifest("churn", "20261124T090000Z-ffffff"): b"{damaged"}, "bad")
    assert [m.run_id for m in branch.runs(limit=3)] == [ids[4], ids[3], ids[2]]
    assert [m.run_id for m in branch.runs("fraud")] == [ids[3], ids[1]]
    assert [m.run_id for m in branch.runs("churn", limit=10)] == [ids[4], ids[2], ids[0]]
    assert branch.runs(limit=0) == [] and branch.runs("nobody") == []
    found = branch.manifest(ids[3])
    assert found is not None and found.pipeline == "fraud"
    assert branch.log(ids[3], "train", 1) == b"log 3\n"
    assert branch.log(ids[3], "train", 2) is None
    assert branch.manifest("20261124T090000Z-ffffff") is None  # damaged: hidden, no crash
    assert branch.manifest("../x") is None


def test_step_jobs_racing_on_one_run_lose_no_step_and_readers_see_them_all(place: Place) -> None:
    planned = manifest("20261124T100000Z-00000a")
    planned.status = RunStatus.running
    names = ["a", "b", "c", "d"]
    planned.steps = {n: StepRecord() for n in names}
    place.clone().commit(*layout.run_record(planned, {}, {}))
    runners = [place.clone() for _ in names]

    def record(i: int) -> str:
        mine = planned.model_copy(deep=True)
        mine.steps[names[i]].status = StepStatus.succeeded
        mine.steps["d"].status = StepStatus.failed  # a hostile or stale claim on another step
        logs = {f"{names[i]}.1.log": b"ok\n"}
        runners[i].fetch()
        return runners[i].commit(*layout.step_run_record(mine, [names[i]], logs, {}))

    outcomes = race(3, record)
    assert all(isinstance(o, str) for o in outcomes), outcomes
    reader = place.clone()
    reader.fetch()
    seen = reader.manifest(planned.run_id)
    assert seen is not None
    assert {n: r.status for n, r in seen.steps.items()} == {
        "a": StepStatus.succeeded,
        "b": StepStatus.succeeded,
        "c": StepStatus.succeeded,
        "d": StepStatus.pending,  # only its own file speaks for a step
    }
    assert [m.steps["b"].status for m in reader.runs("churn")] == [StepStatus.succeeded]
    reader.commit({layout.step_record("churn", planned.run_id, "d"): b"{not json"}, "damaged")
    assert reader.manifest(planned.run_id) == seen  # a damaged record is left out


def test_step_records_never_change_a_step_the_manifest_finished(place: Place) -> None:
    done = manifest("20261124T100000Z-00000b")
    done.steps = {"a": StepRecord(status=StepStatus.failed)}
    late = StepRecord(status=StepStatus.succeeded).model_dump_json().encode()
    branch = place.clone()
    branch.commit(
        *layout.run_record(done, {}, {layout.step_record("churn", done.run_id, "a"): late})
    )
    seen = branch.manifest(done.run_id)
    assert seen is not None and seen.steps["a"].status is StepStatus.failed


# -- compare-and-swap ----------------------------------------------------------------------


def test_writers_of_one_clone_racing_lose_nothing(place: Place) -> None:
    # Not pushing: what is raced for is the local branch's compare-and-swap alone.
    first = place.clone()
    writers = [place.writer(first, push=False) for _ in range(4)]
    outcomes = race(4, lambda i: writers[i].commit({f"w/{i}": b"%d" % i}, f"writer {i}"))
    assert all(isinstance(o, str) for o in outcomes), outcomes
    assert first.list_dir("w") == ["0", "1", "2", "3"]
    first.commit({"w/4": b"4"}, "push them all")
    reader = place.clone()
    reader.fetch()
    assert reader.list_dir("w") == ["0", "1", "2", "3", "4"]


def test_runners_racing_through_one_origin_lose_nothing(place: Place) -> None:
    runners = [place.clone() for _ in range(3)]
    outcomes = race(3, lambda i: runners[i].commit({f"r/{i}": b"%d" % i}, f"runner {i}"))
    assert all(isinstance(o, str) for o in outcomes), outcomes
    reader = place.clone()
    reader.fetch()
    assert reader.list_dir("r") == ["0", "1", "2"]


def test_a_stale_runner_reapplies_its_change_onto_the_new_tip(place: Place) -> None:
    early, late = place.clone(), place.clone()
    late.commit({"shared/first": b"f"}, "first")
    early.commit({"shared/early": b"e"}, "early")
    stale = late.tip()
    late.commit({"shared/late": b"l"}, "late")  # onto a stale tip: its push is refused once
    assert late.list_dir("shared") == ["early", "first", "late"]
    assert late.read("shared/early", at=stale) is None
    early.fetch()
    assert early.list_dir("shared") == ["early", "first", "late"]
    assert early.tip() == late.tip()


def test_fetch_and_catch_up_bring_in_what_others_pushed(place: Place) -> None:
    writer, reader = place.clone(), place.clone()
    assert writer.pushes and reader.pushes
    writer.commit({"news": b"1"}, "one")
    assert reader.read("news") is None
    reader.fetch()
    assert reader.read("news") == b"1"
    writer.commit({"news": b"2"}, "two")
    reader.catch_up()
    assert reader.read("news") == b"2"


# -- claims ------------------------------------------------------------------------------


def test_a_claim_on_a_path_that_exists_is_lost(place: Place) -> None:
    branch = place.clone()
    branch.commit({"claims/x": b"first"}, "claim", expect_absent=["claims/x"])
    with pytest.raises(ClaimLost) as lost:
        branch.commit({"claims/x": b"second", "other": b"o"}, "claim", expect_absent=["claims/x"])
    assert lost.value.path == "claims/x"
    assert branch.read("claims/x") == b"first"
    assert branch.read("other") is None  # nothing of a lost claim's commit lands


def test_one_clone_racing_on_a_claim_has_one_winner(place: Place) -> None:
    first = place.clone()
    writers = [place.writer(first, push=False) for _ in range(4)]
    claim = "claims/cron/nightly/20261125T0200Z"

    def work(i: int) -> str:
        return writers[i].commit({claim: b"%d" % i}, "claim", expect_absent=[claim])

    outcomes = race(4, work)
    winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, ClaimLost) for i, o in enumerate(outcomes) if i not in winners)
    assert first.read(claim) == b"%d" % winners[0]


def test_runners_racing_on_a_claim_have_one_winner_whose_claim_stays(place: Place) -> None:
    runners = [place.clone() for _ in range(3)]
    claim = "production/churn/00000001.json"

    def work(i: int) -> str:
        changes = {claim: b"%d" % i, f"signals/{i}": b"seen"}
        return runners[i].commit(changes, "claim", expect_absent=[claim])

    outcomes = race(3, work)
    winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, ClaimLost) for i, o in enumerate(outcomes) if i not in winners)
    for runner in runners:  # a loser's next commit must not carry its lost claim over
        runner.commit({f"after/{runners.index(runner)}": b"a"}, "after")
    reader = place.clone()
    reader.fetch()
    assert reader.read(claim) == b"%d" % winners[0]
    assert reader.list_dir("signals") == [str(winners[0])]
    assert reader.list_dir("after") == ["0", "1", "2"]
