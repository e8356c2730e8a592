"""The first hour of a new user (issue 15), as a test: a new repository, the first pipeline
of docs/pipeline-format.md, each deliberate mistake, and the words that name its fix.

Through the command line throughout: `sluice validate`, `runs`, `run`, `show`, `approve`,
`reject`, `retry`, `tick`, `trigger`; real Docker and real git where a run is involved.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, make_repo, sluice

EVENTS = ROOT / "tests" / "events"


def _first_pipeline() -> str:
    """The first YAML block of docs/pipeline-format.md: what a new user copies."""
    text = (ROOT / "docs" / "pipeline-format.md").read_text()
    found = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert found, "docs/pipeline-format.md lost its first pipeline"
    return found.group(1)


FIRST = _first_pipeline()


def _validate(tmp_path: Path, text: str) -> tuple[int, str]:
    repo = make_repo(tmp_path, {"first.yaml": text}, name="new")
    done = sluice("validate", repo=repo)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr


def test_the_first_pipeline_of_the_docs_is_valid(tmp_path: Path) -> None:
    assert "needs: [train]" in FIRST and "image: python:3.11-slim" in FIRST
    code, err = _validate(tmp_path, FIRST)
    assert (code, err) == (0, "sluice: 1 pipeline valid\n")


def test_needs_as_one_name_is_a_one_item_list(tmp_path: Path) -> None:
    # as a GitHub Actions job's `needs: build`
    code, err = _validate(tmp_path, FIRST.replace("needs: [train]", "needs: train"))
    assert (code, err) == (0, "sluice: 1 pipeline valid\n")
    repo = tmp_path / "new"
    graph = sluice("graph", "iris-smoke", "--format", "json", repo=repo)
    assert json.loads(graph.stdout)["edges"] == [["train", "evaluate"]]
    unknown = FIRST.replace("needs: [train]", "needs: trian")
    code, err = _validate(tmp_path / "again", unknown)
    assert code == 2 and "unknown step 'trian' (did you mean 'train'?)" in err


# Each mistake: what the user changed, and the words the message must hold (all of them).
MISTAKES = {
    "when-in-braces": (
        (
            "    config: {source: train}\n",
            '    config: {source: train}\n    when: "${{ steps.train.metrics.accuracy >= 0.8 }}"\n',
        ),
        [
            "when is already an expression",
            "without ${{ }}",
            'when: "steps.train.metrics.accuracy >= 0.8"',
        ],
    ),
    "greater-or-equal-backwards": (
        (
            "    config: {source: train}\n",
            '    config: {source: train}\n    when: "steps.train.metrics.accuracy => 0.8"\n',
        ),
        ["'=>' is not an operator", "use '>='"],
    ),
    "retries-in-words": (
        ("  timeout: 2m\n", "  timeout: 2m\n  retries: two\n"),
        ["defaults.retries", "a whole number (retries: 2)", "got text 'two'"],
    ),
    "colon-in-run": (
        ("run: python pipelines/steps/evaluate.py", "run: python -c 'print(1)' && echo done: ok"),
        ["mapping values are not allowed", "block scalar", "run: |", "quote it"],
    ),
    "key-typo": (
        ("    needs: [train]", "    neds: [train]"),
        ["unknown key 'neds'", "did you mean 'needs'"],
    ),
    "bad-duration": (
        ("timeout: 2m", "timeout: two minutes"),
        ["defaults.timeout", "use '90s', '10m'"],
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_names_its_fix(tmp_path: Path, mistake: str) -> None:
    (old, new), words = MISTAKES[mistake]
    assert old in FIRST, f"{mistake}: the docs' pipeline changed"
    code, err = _validate(tmp_path, FIRST.replace(old, new))
    assert code == 2, err
    assert re.search(r"first\.yaml:\d+: ", err), err  # file:line, as praised
    for word in words:
        assert word in err, f"{mistake}: {word!r} not in:\n{err}"
    assert "problem(s)" not in err and "file(s)" not in err


def test_every_problem_at_once_a_missing_image_with_the_shape_errors(tmp_path: Path) -> None:
    # the image line gone, and two shape errors elsewhere: all three in one report
    text = FIRST.replace("  image: python:3.11-slim\n", "").replace(
        "  timeout: 2m\n", "  timeout: 2m\n  retries: two\n"
    )
    text = text.replace("    type: evaluation\n", "    type: evaluation\n    cache: maybe\n")
    code, err = _validate(tmp_path, text)
    assert code == 2
    assert "no step names an image" in err and "defaults: {image: python:3.11-slim}" in err
    assert "defaults.retries" in err and "steps.evaluate.cache" in err
    assert "sluice: 3 problems in 1 file" in err


def test_runs_of_a_misspelt_pipeline_says_so_with_exit_2(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"first.yaml": FIRST.replace("iris-smoke", "two-models")})
    typo = sluice("runs", "--pipeline", "two-modles", repo=repo)
    assert typo.returncode == 2
    assert "no pipeline named 'two-modles'" in typo.stderr
    assert "(did you mean 'two-models'?)" in typo.stderr
    assert "no runs recorded yet" not in typo.stderr
    right = sluice("runs", "--pipeline", "two-models", repo=repo)
    assert right.returncode == 0
    assert "no runs of two-models recorded yet: `sluice run two-models`" in right.stderr


def test_messages_spell_values_as_yaml_does_never_as_python(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"gated.yaml": GATED.replace("IMAGE", "busybox")})
    bad = sluice("run", "gated", "-p", "strict=maybe", repo=repo)
    assert bad.returncode == 2
    assert "param 'strict' takes true or false (its default is true), got 'maybe'" in bad.stderr
    typed = FIRST.replace("    type: training\n", "    type: training\n    network: true\n")
    code, err = _validate(tmp_path / "other", typed)
    assert code == 2 and "steps.train.network: true is not one of" in err
    for python in ("True", "False", "None"):
        assert python not in bad.stderr + err


# --- runs: real Docker ---------------------------------------------------------------------


@pytest.mark.docker
def test_pip_install_without_a_network_points_at_network(tmp_path: Path, python_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "setup.yaml": f"""
            name: setup
            steps:
              - name: deps
                image: {python_image}
                run: pip install --retries 0 --timeout 2 tqdm
            """
        },
    )
    done = sluice("run", "setup", repo=repo)
    assert done.returncode == 1, done.stderr
    assert "the step has no network (network: none, the default)" in done.stderr
    assert "`pip install` needs one: set `network: bridge` on the step" in done.stderr


@pytest.mark.docker
def test_a_missing_image_names_how_to_get_it_in_the_users_repository(
    tmp_path: Path, docker_client: object
) -> None:
    missing = "sluice-test/never-built:0"
    repo = make_repo(
        tmp_path,
        {"m.yaml": f"name: m\nsteps:\n  - name: a\n    image: {missing}\n    run: echo a\n"},
    )
    done = sluice("run", "m", repo=repo)
    assert done.returncode == 1, done.stderr
    assert f"docker pull {missing}" in done.stderr
    assert f"docker build -t {missing} ." in done.stderr
    assert "image: {build: {context: ." in done.stderr
    assert "scripts/" not in done.stderr  # Sluice's own scripts are not in the user's repository


GATED = """
name: gated
params: {seed: 0, strict: true, note: text}
triggers:
  - cron: "0 2 * * *"
defaults: {image: IMAGE}
steps:
  - name: talk
    env: {NOTE: "${{ params.note }}"}
    run: |
      echo step-says-hello
      [ "$NOTE" != fail ]
  - name: gate
    needs: talk
    approval: true
    run: echo gate-says-hi
"""


@pytest.mark.docker
def test_a_paused_run_says_how_to_decide_and_show_lists_its_params(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"gated.yaml": GATED.replace("IMAGE", busybox_image)})
    paused = sluice("run", "gated", "--json", repo=repo)
    assert paused.returncode == 0, paused.stderr
    run_id = json.loads(paused.stdout)["run_id"]
    assert f"    sluice approve {run_id}\n" in paused.stderr
    assert f"    sluice reject {run_id}\n" in paused.stderr
    assert "gate waits for approval" in paused.stderr
    assert "started (2 steps)" in paused.stderr

    shown = sluice("show", run_id, repo=repo)
    assert shown.returncode == 0, shown.stderr
    assert "  params: seed=0, strict=true, note=text\n" in shown.stdout
    assert f"    sluice approve {run_id}\n" in shown.stdout
    assert "no commit (plus uncommitted changes)" in shown.stdout  # a repository never committed
    for python in ("True", "False", "None"):
        assert python not in shown.stdout, shown.stdout


@pytest.mark.docker
def test_quiet_and_json_on_every_command_that_runs_pipelines(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path, {"gated.yaml": GATED.replace("IMAGE", busybox_image)}, commit="gated"
    )
    logged = "[talk] step-says-hello"

    def quiet_json(*args: str, code: int = 0) -> object:
        done = sluice(*args, "-q", "--json", "--no-push", repo=repo)
        assert done.returncode == code, done.stderr
        assert logged not in done.stderr and "gate-says-hi" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    # run: without -q the step's log shows (the control), with -q it does not
    loud = sluice("run", "gated", "--no-push", "--no-cache", repo=repo)
    assert logged in loud.stderr
    first = quiet_json("run", "gated", "--no-cache")
    assert isinstance(first, dict) and first["status"] == "waiting_approval"
    approved = quiet_json("approve", first["run_id"])
    assert isinstance(approved, dict) and approved["status"] == "succeeded"

    second = quiet_json("run", "gated", "--no-cache")
    assert isinstance(second, dict)
    rejected = quiet_json("reject", second["run_id"])
    assert isinstance(rejected, dict) and rejected["status"] == "failed"

    broken = quiet_json("run", "gated", "-p", "note=fail", code=1)
    assert isinstance(broken, dict) and broken["steps"]["talk"]["status"] == "failed"
    retried = quiet_json("retry", broken["run_id"], code=1)  # talk runs (and fails) again
    assert isinstance(retried, dict) and retried["trigger"]["kind"] == "retry"
    assert retried["steps"]["talk"]["attempts"], retried

    # a new file in the work tree: the cron run's step misses the cache and runs
    (repo / "new-data.txt").write_text("more\n")
    ticked = quiet_json("tick", "--now", "2026-11-25T02:05:00Z", "--pipeline", "gated")
    assert isinstance(ticked, list) and [m["trigger"]["kind"] for m in ticked] == ["cron"]
    assert ticked[0]["steps"]["talk"]["attempts"], ticked  # it ran: the log was there to hide

    payload = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "gated", "params": '{"note": "dispatched"}'}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    clean = {k: None for k in os.environ if k.startswith("GITHUB_")}
    done = sluice(
        *("trigger", "-q", "--json", "--no-push"),
        *("--event-name", "workflow_dispatch", "--event-path", str(event)),
        repo=repo,
        env=clean,
    )
    assert done.returncode == 0, done.stderr
    assert logged not in done.stderr
    assert [m["status"] for m in json.loads(done.stdout)] == ["waiting_approval"]


# --- drift for pip users (docs/drift.md, "Without the engine image") ------------------------

DRIFT_DOCKERFILE = """\
FROM {base}
COPY wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels sluice && rm -rf /wheels
"""


def _engine_wheels(dest: Path, tmp_path: Path) -> None:
    """This checkout and its dependencies as wheels, as `pip wheel` makes them for a user
    (offline from the wheel cache scripts/build-engine-image.sh keeps, else from the index)."""
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "engine", src / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sluice" / "engine-wheels"
    )
    base = [
        sys.executable,
        "-m",
        "pip",
        "-q",
        "--disable-pip-version-check",
        "wheel",
        "-w",
        str(dest),
    ]
    for extra in (["--no-index", "--find-links", str(cache)], ["--find-links", str(cache)]):
        done = subprocess.run(
            [*base, *extra, str(src)], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return
    pytest.skip(f"cannot make the engine's wheels here: {done.stderr[-500:]}")


@pytest.mark.docker
@pytest.mark.slow
def test_drift_compute_in_any_python_image_with_sluice_installed(
    tmp_path: Path, python_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "monitor.yaml": """
            name: monitor
            steps:
              - name: check
                image: {build: {context: steps/drift}}
                run: sluice drift compute --reference data/reference.csv --current data/latest.csv
            """
        },
        {
            "data/reference.csv": "age\n" + "".join(f"{20 + i % 10}\n" for i in range(200)),
            "data/latest.csv": "age\n" + "".join(f"{60 + i % 10}\n" for i in range(200)),
            "steps/drift/Dockerfile": DRIFT_DOCKERFILE.format(base=python_image),
            ".gitignore": "steps/drift/wheels/\n",
        },
    )
    _engine_wheels(repo / "steps" / "drift" / "wheels", tmp_path)

    done = sluice("run", "monitor", "--json", repo=repo)  # builds the image with no network
    assert done.returncode == 0, done.stderr
    check = json.loads(done.stdout)["steps"]["check"]
    assert check["status"] == "succeeded", done.stderr
    assert check["metrics"]["drift_detected"] is True
    assert check["metrics"]["feature_age"] > 0.2
    assert {"metrics.json", "drift.json", "report.md"} <= set(check["outputs"])


@pytest.mark.docker
def test_on_a_terminal_a_paused_run_is_not_red_and_says_how_to_decide(
    tmp_path: Path, busybox_image: str
) -> None:
    import pty
    import subprocess
    import sys

    repo = make_repo(tmp_path, {"gated.yaml": GATED.replace("IMAGE", busybox_image)})
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(TERM="xterm-256color", COLUMNS="120", PYTHONPATH=str(ROOT))
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "gated"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the child is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert child.wait(timeout=120) == 0
    text = seen.decode("utf-8", "replace")
    status = re.search(r"(\x1b\[[0-9;]*m)gated: waiting_approval", text)
    assert status, text  # coloured, as on a terminal
    assert status.group(1) != "\x1b[31m" and ";31m" not in status.group(1), repr(status.group(1))
    run_id = re.search(r"(\d{8}T\d{6}Z-[0-9a-f]{6})", text)
    assert run_id, text
    assert f"sluice approve {run_id.group(1)}" in text
    assert f"sluice reject {run_id.group(1)}" in text


@pytest.mark.docker
def test_the_summary_says_why_a_step_ran_instead_of_reusing(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = f"""
    name: reader
    steps:
      - name: read
        image: {busybox_image}
        run: cat src/a.py
    """
    repo = make_repo(tmp_path, {"reader.yaml": pipeline}, {"src/a.py": "print(1)\n"})
    assert sluice("run", "reader", repo=repo).returncode == 0
    (repo / "src" / "a.py").write_text("print(2)\n")
    again = sluice("run", "reader", repo=repo)
    assert again.returncode == 0, again.stderr
    line = next(x for x in again.stderr.splitlines() if x.startswith("  read "))
    assert "succeeded" in line and "not cached: " in line, again.stderr
    assert "workspace files changed (src/a.py)" in line
    assert "declare `workspace: [paths]` to narrow" in line


@pytest.mark.docker
def test_engine_image_without_one_points_pip_users_at_the_docs(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "eng.yaml": """
            name: eng
            steps:
              - name: check
                image: "@engine"
                run: sluice drift compute --reference a.csv --current b.csv
            """
        },
    )
    done = sluice("run", "eng", repo=repo, env={"SLUICE_ENGINE_IMAGE": None})
    assert done.returncode == 1, done.stderr
    assert "set SLUICE_ENGINE_IMAGE" in done.stderr
    assert 'docs/drift.md, "Without the engine image"' in done.stderr
    assert "### Without the engine image" in (ROOT / "docs" / "drift.md").read_text()


@pytest.mark.docker
def test_metrics_written_to_the_wrong_place_are_named_in_the_summary_and_show(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = f"""
    name: gate
    defaults: {{image: {busybox_image}}}
    steps:
      - name: evaluate
        run: |
          echo '{{"accuracy": 0.9}}' > metrics.json
      - name: deploy
        needs: [evaluate]
        when: "steps.evaluate.metrics.accuracy >= 0.8"
        run: echo deploy
    """
    repo = make_repo(tmp_path, {"gate.yaml": pipeline})
    done = sluice("run", "gate", "--json", repo=repo)
    assert done.returncode == 0, done.stderr
    fix = (
        "evaluate wrote no metrics.json (a step writes its metrics to /sluice/outputs/metrics.json)"
    )
    assert f"  warning: deploy: `accuracy` is missing: {fix}" in done.stderr
    shown = sluice("show", json.loads(done.stdout)["run_id"], repo=repo)
    assert f"  warning: deploy: `accuracy` is missing: {fix}" in shown.stdout
