"""The results branch against real git repositories: no checkout, no loss, claims run once."""

from __future__ import annotations

import itertools
import random
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import conftest
import pytest
from conftest import git

from engine.adapters.git_results import ResultsNotPushed, ResultsStore
from engine.core.manifest import RunManifest, RunStatus
from engine.errors import ClaimLost, SluiceError, UsageError

BRANCH = "sluice-results"


def make_repo(path: Path, *, object_format: str = "sha1") -> Path:
    """A repository at `path` with one commit (README.md) on main."""
    return conftest.make_repo(
        path.parent,
        files={"README.md": "hello\n"},
        name=path.name,
        commit="init",
        object_format=object_format,
    )


def make_origin(tmp_path: Path) -> Path:
    """A bare origin that refuses forced pushes and logs every update of its branches."""
    seed = make_repo(tmp_path / "seed")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    git(origin, "config", "receive.denyNonFastForwards", "true")
    git(origin, "config", "core.logAllRefUpdates", "true")
    return origin


def clone(origin: Path, path: Path, *args: str) -> Path:
    git(origin.parent, "clone", "-q", *args, str(origin), str(path))
    return path


def run_id(n: int) -> str:
    return f"202611{n // 1000 + 1:02d}T10{n % 1000 // 100:02d}00Z-{n:06x}"


def manifest(rid: str, pipeline: str = "churn") -> RunManifest:
    return RunManifest(
        run_id=rid,
        pipeline=pipeline,
        pipeline_file=f"pipelines/{pipeline}.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        status=RunStatus.succeeded,
    )


def race(count: int, work: Callable[[int], str]) -> list[str | BaseException]:
    """Run `work(i)` in `count` threads released together; their results or exceptions."""
    barrier = threading.Barrier(count)
    outcomes: list[str | BaseException] = [RuntimeError("never finished")] * count

    def one(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = work(i)
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def snapshot(repo: Path) -> dict[str, object]:
    index = (repo / ".git" / "index").read_bytes()  # before `status` could refresh it
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "index": index,
        "files": files,
        "status": git(repo, "--no-optional-locks", "status", "--porcelain=v2", "--branch"),
        "head": git(repo, "rev-parse", "HEAD"),
        "symbolic": git(repo, "symbolic-ref", "HEAD"),
        "stash": git(repo, "stash", "list", "--format=%H %s"),
    }


def test_recording_leaves_the_users_repository_untouched(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "work")
    git(repo, "switch", "-q", "-c", "feature")
    (repo / "a.txt").write_text("committed\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "a")
    (repo / "a.txt").write_text("stashed\n")
    git(repo, "stash", "-q")
    (repo / "a.txt").write_text("staged\n")
    (repo / "b.txt").write_text("new and staged\n")
    git(repo, "add", "a.txt", "b.txt")
    (repo / "a.txt").write_text("unstaged on top\n")
    (repo / "untracked.txt").write_text("untracked\n")
    before = snapshot(repo)

    with ResultsStore(repo) as store:
        rid = run_id(1)
        store.record_run(manifest(rid), {"train.1.log": b"training\n"})
        store.commit({f"runs/churn/{rid}/logs/train.1.log": None}, "drop a log")
        assert [m.run_id for m in store.runs()] == [rid]

    assert snapshot(repo) == before
    assert "README.md" not in git(repo, "ls-tree", "--name-only", BRANCH)
    assert git(repo, "rev-list", "--count", BRANCH) == "2"


def test_commits_and_pushes_without_a_git_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = make_origin(tmp_path)
    repo = clone(origin, tmp_path / "runner")
    git(repo, "config", "user.useConfigOnly", "true")  # git must not guess one either
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_CONFIG_GLOBAL", "EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    plain = subprocess.run(
        ["git", "commit", "--allow-empty", "-m", "x"], cwd=repo, capture_output=True
    )
    assert plain.returncode != 0  # git itself cannot commit here

    with ResultsStore(repo) as store:
        assert store.pushes
        sha = store.record_run(manifest(run_id(1)))

    assert git(origin, "rev-parse", BRANCH) == sha
    assert git(origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>", BRANCH) == (
        "sluice <sluice@localhost>|sluice <sluice@localhost>"
    )


def test_concurrent_pushes_from_twelve_runners_lose_nothing(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    runners = [clone(origin, tmp_path / f"runner{i}") for i in range(12)]
    ids = [run_id(i) for i in range(12)]

    def record(i: int) -> str:
        with ResultsStore(runners[i]) as store:
            return store.record_run(manifest(ids[i]), {"train.1.log": f"log {i}\n".encode()})

    outcomes = race(12, record)

    assert all(isinstance(o, str) for o in outcomes), outcomes
    assert sorted(git(origin, "ls-tree", "--name-only", f"{BRANCH}:runs/churn").split()) == ids
    history = set(git(origin, "rev-list", BRANCH).split())
    assert set(outcomes) <= history  # every runner's final commit is on the branch
    assert git(origin, "rev-list", "--merges", BRANCH) == ""
    tips = git(origin, "reflog", "show", "--format=%H", f"refs/heads/{BRANCH}").split()
    assert len(tips) == 12  # one landed push each; denyNonFastForwards forbids forcing
    for newer, older in itertools.pairwise(tips):
        git(origin, "merge-base", "--is-ancestor", older, newer)
    for i, rid in enumerate(ids):
        assert git(origin, "show", f"{BRANCH}:runs/churn/{rid}/logs/train.1.log") == f"log {i}"


def test_a_stale_runner_re_applies_its_changes_and_carries_unpushed_ones(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    first, late = clone(origin, tmp_path / "first"), clone(origin, tmp_path / "late")
    with ResultsStore(first) as a, ResultsStore(late, push_attempts=1) as b_once:
        a.record_run(manifest(run_id(0)))
        b_once.fetch()  # `late` now holds run 0 only
        a.record_run(manifest(run_id(1)))
        with pytest.raises(ResultsNotPushed, match=r"fetch first|non-fast-forward") as lost:
            b_once.record_run(manifest(run_id(2)))
        assert git(late, "rev-parse", BRANCH) == lost.value.commit

    with ResultsStore(late) as b:
        b.record_run(manifest(run_id(3)))

    runs = git(origin, "ls-tree", "--name-only", f"{BRANCH}:runs/churn").split()
    assert runs == [run_id(n) for n in range(4)]
    assert git(origin, "rev-list", "--merges", BRANCH) == ""


def test_a_claim_left_unpushed_by_one_writer_never_overwrites_the_winners(
    tmp_path: Path,
) -> None:
    """Two writers in one clone: one claims a path locally while another runner wins it on
    the remote; the second writer's push carries the first's unpushed commits along, but
    not a created file the remote already has."""
    origin = make_origin(tmp_path)
    mine, other = clone(origin, tmp_path / "mine"), clone(origin, tmp_path / "other")
    path = "drift/retrain/monitor/fired/00000001"
    with ResultsStore(other) as winner:
        winner.commit({path: b"winner"}, "claim", expect_absent=[path])
    with ResultsStore(mine, push=False) as claimer, ResultsStore(mine) as writer:
        claimer.commit(
            {path: b"loser", "notes/kept.txt": b"carried"}, "claim", expect_absent=[path]
        )
        writer.record_run(manifest(run_id(7)))
    assert git(origin, "show", f"{BRANCH}:{path}") == "winner"
    assert git(origin, "show", f"{BRANCH}:notes/kept.txt") == "carried"  # the rest is carried
    assert run_id(7) in git(origin, "ls-tree", "--name-only", f"{BRANCH}:runs/churn").split()


def claim_race(stores: list[ResultsStore], path: str) -> int:
    """Two stores claim `path` at once; the winner's index, after checking there is one."""

    def claim(i: int) -> str:
        return stores[i].commit({path: f"{i}".encode()}, "claim", expect_absent=[path])

    outcomes = race(2, claim)
    winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert isinstance(outcomes[1 - winners[0]], ClaimLost)
    return winners[0]


def test_racing_claims_in_one_repository_succeed_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    stores = [ResultsStore(repo), ResultsStore(repo)]
    try:
        for slot in range(6):
            path = f"claims/nightly/{slot}"
            winner = claim_race(stores, path)
            assert stores[0].read(path) == f"{winner}".encode()
    finally:
        for store in stores:
            store.close()


def test_racing_claims_through_a_shared_origin_succeed_once(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    runners = [clone(origin, tmp_path / f"runner{i}") for i in range(2)]
    stores = [ResultsStore(r) for r in runners]
    try:
        for slot in range(4):
            path = f"claims/nightly/{slot}"
            winner = claim_race(stores, path)
            assert git(origin, "show", f"{BRANCH}:{path}") == f"{winner}"
            loser = stores[1 - winner]
            assert loser.read(path) == f"{winner}".encode()  # its lost claim is gone
    finally:
        for store in stores:
            store.close()


def test_a_push_the_remote_refuses_keeps_the_commit_locally(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    runner = clone(origin, tmp_path / "runner")
    with ResultsStore(runner) as store:
        store.record_run(manifest(run_id(0)))
    hook = origin / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\necho called >> "$GIT_DIR/refused"\necho read-only >&2\nexit 1\n')
    hook.chmod(0o755)

    with ResultsStore(runner) as store, pytest.raises(SluiceError) as refused:
        store.record_run(manifest(run_id(1)))

    error = refused.value
    assert isinstance(error, ResultsNotPushed)
    assert f"committed locally on branch {BRANCH}" in str(error)
    assert f"git push origin {BRANCH}" in str(error)
    assert git(runner, "rev-parse", BRANCH) == error.commit
    assert git(runner, "show", f"{BRANCH}:runs/churn/{run_id(1)}/manifest.json")
    assert (origin / "refused").read_text() == "called\n"  # a refusal is not retried


def test_a_fresh_clone_of_only_the_results_branch_can_read(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    writer = clone(origin, tmp_path / "writer")
    with ResultsStore(writer) as store:
        store.record_run(manifest(run_id(1), "churn"), {"train.1.log": b"one\n"})
        store.record_run(manifest(run_id(2), "ltv"), {"fit.2.log": b"two\n"})
    fresh = clone(origin, tmp_path / "fresh", "--single-branch", "--branch", BRANCH)
    tracking_only = clone(origin, tmp_path / "tracking")

    for repo in (fresh, tracking_only):
        with ResultsStore(repo, push=False) as store:
            assert [m.run_id for m in store.runs()] == [run_id(2), run_id(1)]
            found = store.manifest(run_id(1))
            assert found is not None and found.pipeline == "churn"
            assert store.log(run_id(2), "fit", 2) == b"two\n"
    with ResultsStore(tracking_only) as store:
        store.fetch()
    assert git(tracking_only, "rev-parse", BRANCH) == git(origin, "rev-parse", BRANCH)
    with ResultsStore(fresh) as store, pytest.raises(UsageError, match="checked out"):
        store.record_run(manifest(run_id(3)))  # moving HEAD's branch would garble the files


def test_runs_are_listed_newest_first_across_pipelines(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with ResultsStore(repo) as store:
        assert store.runs() == [] and store.read("runs") is None and store.list_dir("") == []
        plan = [(3, "churn"), (1, "ltv"), (5, "churn"), (2, "churn"), (4, "ltv")]
        for n, pipeline in plan:
            store.record_run(manifest(run_id(n), pipeline), {f"train.{n}.log": f"{n}\n".encode()})

        assert [m.run_id for m in store.runs()] == [run_id(n) for n in (5, 4, 3, 2, 1)]
        assert [m.run_id for m in store.runs(limit=2)] == [run_id(5), run_id(4)]
        assert [m.run_id for m in store.runs("churn")] == [run_id(n) for n in (5, 3, 2)]
        assert [m.run_id for m in store.runs("ltv", limit=1)] == [run_id(4)]
        assert store.runs("nope") == [] and store.runs(limit=0) == []
        for n, pipeline in plan:
            found = store.manifest(run_id(n))
            assert found is not None and found.pipeline == pipeline
            assert store.log(run_id(n), "train", n) == f"{n}\n".encode()
        assert store.manifest("20990101T000000Z-ffffff") is None
        assert store.log(run_id(1), "train", 2) is None
        assert store.read("runs/none/manifest.json") is None and store.list_dir("nope") == []
        assert store.read("runs\nchurn") is None and store.manifest("a\nb") is None
        assert store.list_dir("runs") == ["churn", "ltv"]
        assert store.list_dir(f"runs/churn/{run_id(5)}") == ["logs", "manifest.json"]


def test_none_deletes_files_and_folders(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with ResultsStore(repo) as store:
        store.commit({"a/b.txt": b"1", "a/c.txt": b"2", "d.txt": b"3"}, "add")
        store.commit({"a/b.txt": None, "missing/x": None}, "delete one")
        assert store.list_dir("a") == ["c.txt"] and store.read("a/b.txt") is None
        store.commit({"a/c.txt": None}, "empty the folder")
        assert store.list_dir("") == ["d.txt"]
        store.record_run(manifest(run_id(1)))
        store.commit({f"runs/churn/{run_id(1)}": None}, "drop a run")
        assert store.manifest(run_id(1)) is None and store.list_dir("") == ["d.txt"]
        store.commit({"d.txt": None}, "empty the branch")
        assert store.list_dir("") == []
    subprocess.run(["git", "fsck", "--strict"], cwd=repo, check=True, capture_output=True)


def test_random_edits_match_a_model_and_keep_git_tree_order(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    rng = random.Random(7)
    names = ["a", "a-b", "a.b", "a0", "ab", "b"]  # '-' and '.' sort before '/', '0' after
    model: dict[str, bytes] = {}
    with ResultsStore(repo) as store:
        for n in range(60):
            changes: dict[str, bytes | None] = {}
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.5:  # a wide folder of equal-width names, as runs/<p>/ is
                    path = f"wide/{rng.randrange(40):06d}/m" if rng.random() < 0.9 else "wide/odd"
                else:
                    path = "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))
                if any(
                    p == path or p.startswith(path + "/") or path.startswith(p + "/")
                    for p in changes
                ):
                    continue  # one commit cannot make a path both a file and a folder
                changes[path] = None if rng.random() < 0.25 else f"{n}:{path}".encode()
            store.commit(changes, f"edit {n}")
            for path, data in changes.items():
                for key in [k for k in model if k == path or k.startswith(path + "/")]:
                    del model[key]
                for key in [k for k in model if path.startswith(k + "/")]:
                    if data is not None:
                        del model[key]
                if data is not None:
                    model[path] = data
        listed = git(repo, "ls-tree", "-r", "--name-only", BRANCH).splitlines()
        assert sorted(listed) == sorted(model)
        assert all(store.read(path) == data for path, data in model.items())
    subprocess.run(["git", "fsck", "--strict"], cwd=repo, check=True, capture_output=True)


def test_concurrent_local_writers_lose_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")

    def write(i: int) -> str:
        with ResultsStore(repo) as store:
            for k in range(3):
                store.commit({f"w{i}/{k}": b"x"}, f"writer {i} #{k}")
            return "ok"

    assert race(8, write) == ["ok"] * 8
    with ResultsStore(repo) as store:
        assert sorted(store.list_dir("")) == [f"w{i}" for i in range(8)]
        assert all(store.list_dir(f"w{i}") == ["0", "1", "2"] for i in range(8))
    assert git(repo, "rev-list", "--count", BRANCH) == "24"


def test_push_modes_and_bad_input(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    alone, runner = make_repo(tmp_path / "alone"), clone(origin, tmp_path / "runner")
    assert not ResultsStore(alone).pushes and ResultsStore(alone, push=True).pushes
    assert ResultsStore(runner).pushes and not ResultsStore(runner, push="never").pushes
    with pytest.raises(UsageError):
        ResultsStore(alone, push="sometimes")
    with ResultsStore(alone) as store:
        for bad in ("../x", "a//b", ".git/config", "a/./b"):
            with pytest.raises(UsageError):
                store.commit({bad: b"x"}, "bad")
        with pytest.raises(UsageError):
            store.commit({"a": b"file", "a/b": b"folder"}, "both")


def test_sha256_repositories(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", object_format="sha256")
    with ResultsStore(repo) as store:
        store.record_run(manifest(run_id(1)), {"train.1.log": b"x"})
        assert store.log(run_id(1), "train", 1) == b"x"
    subprocess.run(["git", "fsck", "--strict"], cwd=repo, check=True, capture_output=True)


def test_a_linked_worktree_shares_the_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"), "-b", "side")
    with ResultsStore(tmp_path / "linked") as store:
        store.record_run(manifest(run_id(1)))
    with ResultsStore(repo) as store:
        assert [m.run_id for m in store.runs()] == [run_id(1)]


def test_a_folder_of_thousands_of_runs_stays_a_sorted_valid_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    bulk = {f"runs/churn/{run_id(n)}/manifest.json": b"{}" for n in range(0, 6000, 2)}
    with ResultsStore(repo) as store:
        store.commit(bulk, "3,000 runs: a tree too big to compress")
        for n in (1, 2999, 5999, 7000):  # first, middle, last, and after the last
            store.record_run(manifest(run_id(n)))
        store.commit({f"runs/churn/{run_id(0)}": None, "runs/churn/0-odd/x": b"x"}, "mixed widths")
        store.record_run(manifest(run_id(7001)))
        assert [m.run_id for m in store.runs(limit=2)] == [run_id(7001), run_id(7000)]
        expected = {run_id(n) for n in [*range(2, 6000, 2), 1, 2999, 5999, 7000, 7001]} | {"0-odd"}
        assert set(store.list_dir("runs/churn")) == expected
    listed = git(repo, "ls-tree", "--name-only", f"{BRANCH}:runs/churn").splitlines()
    assert len(listed) == len(expected)
    subprocess.run(["git", "fsck", "--strict"], cwd=repo, check=True, capture_output=True)
