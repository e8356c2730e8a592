"""The three checks every workflow file passes (issue 14), for any test to import:

- check-jsonschema with the vendored `vendor.github-workflows` schema;
- zizmor, offline, with no finding of medium severity or higher;
- GitHub's own parser, `@actions/workflow-parser` (tests/node, installed by
  scripts/node-tools.sh), through tests/node/validate-workflow.mjs bundled with esbuild
  into a temporary folder (Node 20 refuses the package's JSON imports unbundled).

    from workflow_validators import validate_workflow
    assert validate_workflow(path) == []

A missing tool skips the test, except under CI=true, where it fails it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "validate-workflow.mjs"
# --strict-collection: a file zizmor cannot read fails, where it would be skipped with a warning
ZIZMOR = [
    "--offline",
    "--no-config",
    "--strict-collection",
    "--min-severity",
    "medium",
    "--format",
    "plain",
]


def _missing(what: str, fix: str) -> None:
    reason = f"{what} is not installed ({fix})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run every workflow validator", pytrace=False)
    pytest.skip(reason)


def tool(name: str) -> str:
    """The path of a Python-installed validator (check-jsonschema, zizmor)."""
    found = shutil.which(name)
    if found is None:
        _missing(name, f"pip install {name}")
    assert found is not None
    return found


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300, check=False)


@cache
def github_parser() -> Path:
    """The bundled parser script (built once per test process)."""
    esbuild = NODE_DIR / "node_modules" / ".bin" / "esbuild"
    if shutil.which("node") is None or not esbuild.exists():
        _missing("GitHub's workflow parser (node, tests/node)", "bash scripts/node-tools.sh")
    folder = Path(tempfile.mkdtemp(prefix="sluice-workflow-parser-"))
    atexit.register(shutil.rmtree, folder, True)
    bundle = folder / "validate-workflow.cjs"
    argv = [str(esbuild), str(SCRIPT), "--bundle", "--platform=node", "--format=cjs"]
    done = subprocess.run(
        [*argv, "--log-level=warning", f"--outfile={bundle}"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"esbuild could not bundle {SCRIPT}:\n{done.stderr}", pytrace=False)
    return bundle


def check_jsonschema(paths: Sequence[Path]) -> list[str]:
    done = _run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    )
    return [] if done.returncode == 0 else [f"check-jsonschema: {done.stdout}{done.stderr}".strip()]


def zizmor(paths: Sequence[Path]) -> list[str]:
    done = _run([tool("zizmor"), *ZIZMOR, *map(str, paths)])
    return [] if done.returncode == 0 else [f"zizmor: {done.stdout}{done.stderr}".strip()]


def parse_with_github(paths: Sequence[Path]) -> list[str]:
    """GitHub's parser's errors, `file:line:column: message`."""
    done = _run(["node", str(github_parser()), *map(str, paths)])
    if done.returncode != 0:
        return [f"workflow-parser failed: {done.stdout}{done.stderr}".strip()]
    found = json.loads(done.stdout)
    return [
        f"workflow-parser: {file}:{error['line']}:{error['column']}: {error['message']}"
        for file, errors in found.items()
        for error in errors
    ]


def validate_workflows(paths: Sequence[Path | str]) -> list[str]:
    """Every problem the three validators find in the files (each run once for all)."""
    files = [Path(path) for path in paths]
    return [*check_jsonschema(files), *zizmor(files), *parse_with_github(files)]


def validate_workflow(path: Path | str) -> list[str]:
    """Every problem the three validators find in one workflow file ([] when it passes)."""
    return validate_workflows([path])
