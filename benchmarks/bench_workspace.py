"""How often a `workspace: true` step runs again, replayed over real git histories: before
(every file in its cache key) and after (Markdown, `docs/` and `.github/` left out).

    python benchmarks/bench_workspace.py [--json] [REPO[:SUBTREE] ...]

Default: this repository's two examples as if their steps kept the default
`workspace: true` (`examples/github-workflow` does; `examples/retraining` narrows each
step, so this is its history without that), and this repository as a whole. For each commit that changed any file
under the root, a `workspace: true` step's key changes before if any file changed, and
after only if a file `engine.local.workspace.read_by_default` keeps changed. A count, not a
time: the same on every machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from engine.local.workspace import read_by_default

ROOT = Path(__file__).resolve().parents[1]


def commits(repo: Path, subtree: str) -> list[list[str]]:
    """Each commit's changed paths under `subtree` (relative to it), oldest first."""
    where = ["--", subtree] if subtree else []
    log = ["log", "--reverse", "--no-renames", "--format=@%H", "--name-only", *where]
    out = subprocess.run(
        ["git", "-C", str(repo), *log],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("@"):
            found.append([])
        elif line.strip() and found:
            name = line.strip()
            found[-1].append(name[len(subtree) + 1 :] if subtree else name)
    return [files for files in found if files]


def replay(repo: Path, subtree: str) -> dict[str, object]:
    changes = commits(repo, subtree)
    after = [files for files in changes if any(read_by_default(f) for f in files)]
    return {
        "history": f"{repo.name}:{subtree}" if subtree else repo.name,
        "commits": len(changes),
        "runs_before": len(changes),
        "runs_after": len(after),
        "share_after": round(len(after) / len(changes), 3) if changes else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "histories",
        nargs="*",
        default=[f"{ROOT}:examples/github-workflow", f"{ROOT}:examples/retraining", str(ROOT)],
    )
    args = parser.parse_args()
    rows = []
    for item in args.histories:
        path, _, subtree = item.partition(":")
        rows.append(replay(Path(path), subtree.strip("/")))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| History | Commits | `workspace: true` runs again, before | after |")
    print("|---|---:|---:|---:|")
    for row in rows:
        share = f"{row['share_after']:.0%}"
        print(
            f"| {row['history']} | {row['commits']} | {row['runs_before']} (100%) "
            f"| {row['runs_after']} ({share}) |"
        )


if __name__ == "__main__":
    main()
