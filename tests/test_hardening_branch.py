"""The results branch is untrusted input: whoever can push to it (a pull request's workflow,
a compromised runner) must not make the engine write outside its own folders.

Each test plays the attacker with real git (a clone of the bare origin, a commit on
`sluice-results`, a push), then runs the real CLI with real Docker, and counts the files the
hostile names put anywhere outside the folders the engine writes outputs to.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, make_repo, sluice

from engine.core import layout, names
from engine.core.manifest import RunManifest
from engine.errors import UsageError

MARK = f"pwned-{secrets.token_hex(4)}"  # in every file a hostile name could create


def hostile_names(tmp_path: Path) -> list[str]:
    """Output names a branch could hold, each aimed at a file outside the outputs folder.

    A local copy of outputs lives 5 folders under the repository
    (`.sluice/runs/<run>/steps/<step>/outputs`), the repository under `tmp_path`.
    """
    up = "../" * 6
    return [
        f"{up}{MARK}-climb",  # tmp_path/pwned-…
        str(tmp_path / f"{MARK}-absolute"),  # an absolute path
        f"//{tmp_path}/{MARK}-double-slash",
        f"a/../../{MARK}-inner-dotdot",  # into steps/<step>/
        f"../{MARK}-sibling",
        "..",
        ".",
        "",
        f"./{MARK}-dot",
        f"a//{MARK}-empty-part",
        f"x\0/{up}{MARK}-nul",
        f"..\\..\\{MARK}-backslash",
        f"{up[:-1]}\\{MARK}-mixed",
        "a" * 300 + MARK,  # longer than a file name may be
        ("d/" * 2100) + MARK,  # longer than a path may be
        f"{MARK}-ok/../../{up}{MARK}-behind-a-folder",
    ]


def written_outside(root: Path) -> list[Path]:
    """Files carrying MARK anywhere under `root` except inside an `outputs` folder."""
    return sorted(
        p
        for p in root.rglob(f"*{MARK}*")
        if not p.is_dir() and "outputs" not in p.relative_to(root).parts
    )


def test_one_validator_refuses_every_hostile_name(tmp_path: Path) -> None:
    """The check behind every branch read: each hostile name is refused, with its reason."""
    refused = {name: names.problem(name, nested=True) for name in hostile_names(tmp_path)}
    assert all(refused.values()), [n for n, why in refused.items() if why is None]
    assert names.problem("model/weights.bin", nested=True) is None
    assert names.problem("model/weights.bin") == "contains '/'"
    with pytest.raises(UsageError, match=r"step '\.\.' has a '\.\.' component"):
        names.checked("..", "step")
    with pytest.raises(UsageError, match="not a valid path on the results branch"):
        layout.parts("runs/a\\b/manifest.json")


PIPELINE = """
name: hostile
steps:
  - name: make
    image: {image}
    run: echo made > $SLUICE_OUTPUTS/out.txt
  - name: use
    image: {image}
    needs: [make]
    cache: false
    run: cat $SLUICE_INPUTS/make/out.txt; [ -e /sluice/inputs/make/out.txt ] && {last}
"""


def _repo(tmp_path: Path, image: str, last: str) -> Path:
    return make_repo(tmp_path, {"p.yaml": PIPELINE.format(image=image, last=last)}, origin=True)


def _attack(tmp_path: Path, edit: Callable[[Path], list[str]], message: str) -> list[str]:
    """As a compromised runner: clone origin, `edit` the results branch, commit, push."""
    attacker = tmp_path / "attacker"
    if not attacker.exists():
        git(
            tmp_path,
            "clone",
            "-q",
            "-b",
            "sluice-results",
            str(tmp_path / "origin.git"),
            "attacker",
        )
    git(attacker, "pull", "-q", "--ff-only", "origin", "sluice-results")
    touched = edit(attacker)
    git(attacker, "add", "-A")
    git(attacker, "commit", "-q", "-m", message)
    git(attacker, "push", "-q", "origin", "HEAD:sluice-results")
    # as a runner does before it reads the branch (`sluice run` fetches by itself)
    git(tmp_path / "repo", "fetch", "-q", "origin", "+sluice-results:sluice-results")
    return touched


def _rename_output(path: Path, new: str, *, step: str | None = None) -> None:
    data = json.loads(path.read_text())
    outputs = data["steps"][step]["outputs"] if step else data["outputs"]
    outputs[new] = outputs.pop(next(iter(outputs)))
    path.write_text(json.dumps(data, indent=2))


@pytest.mark.docker
def test_hostile_cache_entries_are_misses_and_write_nothing_outside(
    tmp_path: Path, busybox_image: str
) -> None:
    """Figure: hostile output names tried in cache entries, files written outside (0)."""
    repo = _repo(tmp_path, busybox_image, "true")
    first = sluice("run", "hostile", "--json", repo=repo)
    assert first.returncode == 0, first.stderr
    tried, outside, wrong = 0, list[Path](), list[tuple[str, int, str]]()
    for name in hostile_names(tmp_path):

        def poison(clone: Path, name: str = name) -> list[str]:
            entries = list((clone / "cache").glob("*/*.json"))
            for entry in entries:
                if json.loads(entry.read_text())["step"] == "make":
                    _rename_output(entry, name)
                    return [entry.name]
            raise AssertionError("no cache entry of step make")

        _attack(tmp_path, poison, f"poison the cache: {name[:40]!r}")
        tried += 1
        done = sluice("run", "hostile", "--json", repo=repo)
        outside = sorted(set(outside) | set(written_outside(tmp_path)))
        steps = json.loads(done.stdout)["steps"] if done.stdout else {}
        # a miss said on stderr: `make` runs again, `use` gets its real output
        if (
            done.returncode != 0
            or [steps["make"]["status"], steps["use"]["status"]] != ["succeeded"] * 2
            or steps["make"]["cached_from"] is not None
            or "cache entry" not in done.stderr
            or "refused" not in done.stderr
        ):
            wrong.append((name, done.returncode, done.stderr[-300:]))
    print(f"hostile cache-entry names tried: {tried}; files written outside: {len(outside)}")
    assert tried == len(hostile_names(tmp_path))
    assert outside == []
    assert wrong == []


@pytest.mark.docker
def test_retry_refuses_a_hostile_manifest_and_writes_nothing_outside(
    tmp_path: Path, busybox_image: str
) -> None:
    """Figure: hostile names tried in a manifest read by `retry`, files written outside (0)."""
    repo = _repo(tmp_path, busybox_image, "false")  # `use` fails: a run worth retrying
    first = sluice("run", "hostile", "--json", repo=repo)
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    manifest_path = layout.manifest("hostile", run_id)
    tried, outside, wrong = 0, list[Path](), list[tuple[str, int, str]]()
    for name in hostile_names(tmp_path):

        def poison(clone: Path, name: str = name) -> list[str]:
            _rename_output(clone / manifest_path, name, step="make")
            return [manifest_path]

        _attack(tmp_path, poison, f"poison run {run_id}: {name[:40]!r}")
        tried += 1
        done = sluice("retry", run_id, "--json", repo=repo)
        outside = sorted(set(outside) | set(written_outside(tmp_path)))
        if done.returncode != 2 or "steps.make.outputs:" not in done.stderr:
            wrong.append((name, done.returncode, done.stderr[-300:]))
    print(f"hostile manifest names tried: {tried}; files written outside: {len(outside)}")
    assert outside == []
    assert wrong == []


@pytest.mark.docker
@pytest.mark.parametrize(
    ("field", "set_it"),
    [
        ("run_id", lambda m: m.__setitem__("run_id", f"../../../../{MARK}-run")),
        ("pipeline", lambda m: m.__setitem__("pipeline", "../x")),
        ("steps", lambda m: m["steps"].__setitem__("../x", m["steps"]["make"])),
        (
            "steps.make.attempts.0.log",
            lambda m: m["steps"]["make"]["attempts"][0].update(log="/etc/x"),
        ),
        (
            "steps.make.outputs.out.txt.sha256",
            lambda m: m["steps"]["make"]["outputs"]["out.txt"].update(sha256="../../x"),
        ),
    ],
)
def test_retry_and_approve_name_the_hostile_field(
    tmp_path: Path, busybox_image: str, field: str, set_it: Callable[[dict[str, object]], None]
) -> None:
    """Every name read from a manifest is checked, not only output names: exit 2 naming it."""
    repo = _repo(tmp_path, busybox_image, "false")
    first = sluice("run", "hostile", "--json", repo=repo)
    run_id = json.loads(first.stdout)["run_id"]
    manifest_path = layout.manifest("hostile", run_id)

    def poison(clone: Path) -> list[str]:
        data = json.loads((clone / manifest_path).read_text())
        set_it(data)
        (clone / manifest_path).write_text(json.dumps(data))
        return [manifest_path]

    _attack(tmp_path, poison, f"poison {field}")
    for command in (["retry", run_id], ["show", run_id], ["approve", run_id]):
        done = sluice(*command, repo=repo)
        assert done.returncode == 2, (command, done.stderr)
        assert field.split(".")[0] in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert written_outside(tmp_path) == []


def test_a_manifest_with_a_hostile_name_does_not_load() -> None:
    """The model itself refuses: every reader of the branch gets the check."""
    base = {
        "run_id": "20261124T100000Z-00002a",
        "pipeline": "p",
        "pipeline_file": "pipelines/p.yaml",
        "pipeline_sha256": "0" * 64,
        "started_at": "2026-11-24T10:00:00.000Z",
    }
    assert RunManifest.model_validate(base).run_id == base["run_id"]
    for field, value in [("run_id", "../x"), ("pipeline", "a/b"), ("baseline_run", "/x")]:
        with pytest.raises(ValueError, match=field):
            RunManifest.model_validate({**base, field: value})


# --- the defences that held: hostile names from the user, output links leading out ---------

HOSTILE_IDS = ["..", "../x", "/etc", f"../../{MARK}", "a\\b", "a" * 300, "."]


def test_hostile_pipeline_and_step_names_are_refused(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        {
            "a.yaml": f"name: ../../{MARK}-pipeline\nsteps: [{{name: ok, image: x, run: 'true'}}]\n",
            "b.yaml": f"name: b\nsteps: [{{name: ../{MARK}-step, image: x, run: 'true'}}]\n",
        },
        commit="hostile names",
    )
    for command in (["validate"], ["run", "b"], ["run", f"../../{MARK}-pipeline"]):
        done = sluice(*command, repo=repo)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    done = sluice("validate", repo=repo)
    assert "a.yaml" in done.stderr and "b.yaml" in done.stderr
    assert written_outside(tmp_path) == []
    assert not (repo / ".sluice" / "runs").exists() or not any(
        (repo / ".sluice" / "runs").iterdir()
    )


def test_hostile_run_ids_are_refused_by_every_command(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": "name: p\nsteps: [{name: s, image: x, run: 'true'}]\n"})
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    tried = 0
    for run_id in HOSTILE_IDS:
        for command in (
            ["show", run_id],
            ["logs", run_id, "s"],
            ["retry", run_id],
            ["approve", run_id],
            ["reject", run_id],
            ["promote", run_id],
        ):
            tried += 1
            done = sluice(*command, repo=repo)
            assert done.returncode == 2, (command, done.stderr)
            assert "Traceback" not in done.stderr
    print(f"hostile run ids tried: {tried} commands, files written outside: 0")
    assert written_outside(tmp_path) == []


@pytest.mark.docker
def test_output_links_leading_out_are_refused(tmp_path: Path, busybox_image: str) -> None:
    secret = tmp_path / f"{MARK}-host-file"
    secret.write_text("the host's\n")
    links = {
        "absolute": f"ln -s {secret} $SLUICE_OUTPUTS/abs",
        "climbing": "ln -s ../../../../../../.. $SLUICE_OUTPUTS/up",
        "through a folder": "mkdir $SLUICE_OUTPUTS/d; ln -s .. $SLUICE_OUTPUTS/d/up; "
        "ln -s d/up/.. $SLUICE_OUTPUTS/out",
    }
    steps = "\n".join(
        f"  - name: link-{n}\n    image: {busybox_image}\n"
        f"    run: 'echo fine > $SLUICE_OUTPUTS/ok.txt; {script}'"
        for n, script in enumerate(links.values())
    )
    repo = make_repo(tmp_path, {"p.yaml": f"name: links\nsteps:\n{steps}\n"}, commit="links")
    done = sluice("run", "links", "--json", repo=repo)
    assert done.returncode == 1, done.stderr
    recorded = json.loads(done.stdout)["steps"]
    for n, what in enumerate(links):
        step = recorded[f"link-{n}"]
        assert step["status"] == "failed", (what, step)
        assert step["outputs"] == {}, what
        assert "links to absolute" in step["reason"] or "outside" in step["reason"], step
    assert secret.read_text() == "the host's\n"
    assert written_outside(tmp_path) == [secret]  # only the file the test made
