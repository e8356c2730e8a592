"""A step's secrets never leave the engine: not through a line split at 64 KiB, nor as a
metrics key, an output name or an error message.

The secret is made of Cyrillic letters, which nothing else the engine prints contains, so
every one of them found in any output is a leaked secret byte, whole or in fragments.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import git, make_repo, sluice

from engine.adapters.docker_watch import _MAX_LINE, _Lines
from engine.local.logs import Masker

ALPHABET = "БГДЖЗИЙЛПФЦЧШЩЪЫЬЭЮЯ"
SECRET = "Ж" + "".join(random.Random().choice(ALPHABET) for _ in range(15))
NAME = "SLUICE_TEST_TOKEN"


def leaked(text: str) -> int:
    """Secret bytes (UTF-8) in `text`: whole secrets and every fragment of one."""
    return sum(len(ch.encode()) for ch in text if ch in ALPHABET)


def test_a_secret_split_across_pieces_is_masked_whatever_the_cut() -> None:
    """Every cut of a long line (the watcher's 64 KiB pieces), fed through the masker."""
    from engine.local.logs import MaskedLines  # here: the Docker test runs on older engines

    mask = Masker([SECRET])
    line = ("-" + SECRET) * 6000  # longer than _MAX_LINE: it arrives in pieces
    for offset in range(len(SECRET) + 1):  # each place a cut can fall inside the secret
        out: list[str] = []
        masked = MaskedLines(mask, out.append)
        pieces = _Lines(masked)
        data = ("x" * offset + line + "\n").encode()
        for start in range(0, len(data), 4096):
            pieces.feed(data[start : start + 4096])
        pieces.close()
        masked.close()
        text = "".join(out)
        assert leaked(text) == 0, (offset, len(out))
        assert text.replace("\n", "") == "x" * offset + "-***" * 6000
        assert len(out) >= len(line) // _MAX_LINE  # it did arrive in pieces


PIPELINE = """
name: leaky
defaults: {{image: {image}, secrets: [{name}]}}
steps:
  - name: split
    # one line of 270k characters in one write: the 64 KiB pieces cut through secrets
    run: |
      s="-${name}"; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do s="$s$s"; done
      printf '%s\\n' "$s"; echo "plain ${name} too"
  - name: keys
    run: |
      printf '{{"%s": 1, "acc_%s": 0.5, "plain": 2}}' "${name}" "${name}" > $SLUICE_OUTPUTS/metrics.json
  - name: names
    run: echo x > "$SLUICE_OUTPUTS/model-${name}.pkl"
"""


def branch_files(repo: Path) -> dict[str, str]:
    """Every file on the results branch, as text."""
    listed = git(repo, "ls-tree", "-r", "--name-only", "sluice-results").splitlines()
    return {path: git(repo, "show", f"sluice-results:{path}") for path in listed}


@pytest.mark.docker
def test_no_secret_byte_leaves_the_engine(tmp_path: Path, busybox_image: str) -> None:
    """Figure: secret bytes leaked (0) over stdout, stderr, the committed manifest and logs,
    the local record and the job summary."""
    text = PIPELINE.format(image=busybox_image, name=NAME)
    repo = make_repo(tmp_path, {"leaky.yaml": text}, origin=True)
    env = {NAME: SECRET}
    run = sluice("run", "leaky", "--json", repo=repo, env=env, process=True)
    event = tmp_path / "dispatch.json"
    payload = json.loads((Path(__file__).parent / "events" / "workflow_dispatch.json").read_text())
    event.write_text(json.dumps({**payload, "inputs": {"pipeline": "leaky"}}))
    summary = tmp_path / "summary.md"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    trigger = sluice(
        *("trigger", "--json", "--event-name", "workflow_dispatch", "--event-path", str(event)),
        repo=repo,
        env={**env, **github},
        process=True,
    )
    outputs = {
        "run stdout": run.stdout,
        "run stderr": run.stderr,
        "trigger stdout": trigger.stdout,
        "trigger stderr": trigger.stderr,
        "job summary": summary.read_text(),
        **{f"branch {path}": data for path, data in branch_files(repo).items()},
        **{
            f"local {p.relative_to(repo)}": p.read_text(errors="replace")
            for p in (repo / ".sluice" / "runs").rglob("*")
            if p.is_file()
        },
    }
    total = {name: leaked(data) for name, data in outputs.items()}
    print(f"secret bytes leaked: {sum(total.values())} over {len(outputs)} outputs")
    assert {name: n for name, n in total.items() if n} == {}
    assert any("logs/split.1.log" in name for name in outputs), sorted(outputs)

    assert run.returncode == 1, run.stderr[-2000:]  # `names` fails: its output names a secret
    steps = json.loads(run.stdout)["steps"]
    assert steps["split"]["status"] == "succeeded"
    assert steps["keys"]["metrics"] == {"***": 1, "acc_***": 0.5, "plain": 2}
    assert steps["names"]["status"] == "failed"
    assert "contains the value of a secret" in steps["names"]["attempts"][-1]["error"]
    assert "plain *** too" in run.stderr
    assert trigger.returncode == 1, trigger.stderr[-2000:]
    assert "names" in summary.read_text()
