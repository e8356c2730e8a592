"""local/workspace.py: the repository snapshot a run starts from."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from conftest import git, make_repo

from engine.local.workspace import (
    WorkspaceSnapshot,
    ensure_engine_dir,
    find_repo_root,
    selection,
    snapshot,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members(tar: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar) as opened:
        return {m.name: m for m in opened}


def test_a_git_snapshot_holds_tracked_and_untracked_files_but_not_ignored_ones(
    tmp_path: Path,
) -> None:
    repo = make_repo(
        tmp_path,
        files={"src/a.py": "a\n", ".gitignore": "*.log\n", "run.sh": "echo\n"},
        commit="first",
    )
    (repo / "run.sh").chmod(0o755)
    (repo / "new.txt").write_text("untracked\n")
    (repo / "debug.log").write_text("ignored\n")
    os.symlink("src/a.py", repo / "link")
    ensure_engine_dir(repo)
    (repo / ".sluice" / "runs").mkdir()
    (repo / ".sluice" / "runs" / "x").write_text("engine's own\n")

    snap = snapshot(repo, tmp_path / "ws.tar")
    assert sorted(snap.digests) == [".gitignore", "link", "new.txt", "run.sh", "src/a.py"]
    assert snap.digests["src/a.py"] == sha(b"a\n")
    assert snap.digests["link"] == sha(b"link:src/a.py")
    assert snap.commit == git(repo, "rev-parse", "HEAD")
    assert snap.dirty  # new.txt, and run.sh's mode
    found = members(tmp_path / "ws.tar")
    assert next(iter(found)) == "workspace" and found["workspace"].isdir()
    assert found["workspace/src"].isdir()
    assert found["workspace/link"].issym() and found["workspace/link"].linkname == "src/a.py"
    assert found["workspace/run.sh"].mode == 0o755
    assert found["workspace/new.txt"].mode == 0o644
    assert not any("debug.log" in name or ".sluice" in name for name in found)


def test_a_clean_checkout_is_not_dirty(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files={"a.txt": "a\n"}, commit="first")
    snap = snapshot(repo, tmp_path / "ws.tar")
    assert snap.commit is not None and not snap.dirty
    assert snap.digests == {"a.txt": sha(b"a\n")}


def test_a_folder_that_is_no_repository_is_walked(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "f.txt").write_text("f")
    (root / "top.txt").write_text("t")
    ensure_engine_dir(root)
    snap = snapshot(root, tmp_path / "ws.tar")
    assert snap.digests == {"deep/er/f.txt": sha(b"f"), "top.txt": sha(b"t")}
    assert (snap.commit, snap.dirty) == (None, False)
    assert find_repo_root(root / "deep" / "er") == (root / "deep" / "er").resolve()


def test_subsets_of_the_snapshot(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        files={"src/a.py": "a", "src/b.py": "b", "srcs.txt": "s", "data/d.csv": "d"},
        commit="first",
    )
    snap = snapshot(repo, tmp_path / "ws.tar")
    assert snap.files_for(False) == {}
    assert snap.files_for(True) == snap.digests
    assert sorted(snap.files_for(["src", "data/d.csv"])) == ["data/d.csv", "src/a.py", "src/b.py"]
    assert sorted(snap.files_for(["/src/"])) == ["src/a.py", "src/b.py"]  # not srcs.txt
    subset = snap.subset_tar(["src"], tmp_path / "sub.tar")
    assert sorted(members(subset)) == ["workspace", "workspace/src/a.py", "workspace/src/b.py"]


def test_the_engine_dir_ignores_itself_and_the_root_is_found_upwards(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files={"a/b/c.txt": "c"}, commit="first")
    folder = ensure_engine_dir(repo)
    assert folder == repo / ".sluice"
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"
    (folder / ".gitignore").write_text("*\n# kept\n")
    ensure_engine_dir(repo)
    assert (folder / ".gitignore").read_text() == "*\n# kept\n"  # an existing one is left alone
    assert git(repo, "status", "--porcelain") == ""  # nothing of .sluice shows up
    assert find_repo_root(repo / "a" / "b") == repo.resolve()
    assert WorkspaceSnapshot(root=repo, tar=None).files_for(True) == {}


def test_workspace_true_leaves_out_docs_markdown_and_github_files(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        files={
            "src/a.py": "a",
            "README.md": "r",
            "src/NOTES.md": "n",
            "docs/guide.txt": "g",
            ".github/workflows/ci.yml": "c",
            "Dockerfile": "FROM x",
        },
        commit="first",
    )
    snap = snapshot(repo, tmp_path / "ws.tar", selection([True]))
    assert sorted(snap.files_for(True)) == ["Dockerfile", "src/a.py"]
    assert sorted(members(tmp_path / "ws.tar")) == [
        "workspace",
        "workspace/Dockerfile",
        "workspace/src",
        "workspace/src/a.py",
    ]
    # named paths are what they name; `.` is every file
    both = snapshot(repo, tmp_path / "both.tar", selection([True, ["docs"], "."]))
    assert sorted(both.files_for(True)) == ["Dockerfile", "docs/guide.txt", "src/a.py"]
    assert sorted(both.files_for(["docs", "README.md"])) == ["README.md", "docs/guide.txt"]
    assert len(both.files_for(["."])) == 6  # the build context `.` is digested, not copied
    assert "workspace/README.md" not in members(tmp_path / "both.tar")
    subset = both.subset_tar(["."], tmp_path / "sub.tar")
    assert "workspace/docs/guide.txt" in members(subset)
