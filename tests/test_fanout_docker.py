"""Fan-out steps (issue 18) as a user runs them: `sluice run`/`trigger`/`retry`/`show` in
process, against real git repositories and real containers (busybox; python for a fan-in).

One 2x3 grid with a fan-in step runs once for the module (its tests read the same run);
every other test makes its own repository and runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import BUSYBOX, PYTHON, RUN_LABEL, _image, git, make_repo, sluice

pytestmark = pytest.mark.docker

EVENTS = Path(__file__).parent / "events"
Manifest = dict[str, Any]

LRS = (0.1, 0.2)
DEPTHS = (2, 3, 4)
GRID_NAMES = [f"train[lr={lr},depth={depth}]" for lr in LRS for depth in DEPTHS]

# score = 10 * (1 for lr 0.1, 2 for lr 0.2) - (depth - 3)^2: the best is lr=0.2, depth=3.
GRID = """
name: grid
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: train
    matrix:
      lr: [0.1, 0.2]
      depth: [2, 3, 4]
    env: {LR: "${{ matrix.lr }}", DEPTH: "${{ matrix.depth }}"}
    config: {lr: "${{ matrix.lr }}", depth: "${{ matrix.depth }}", label: "d=${{ matrix.depth }}"}
    run: |
      echo "run lr=${{ matrix.lr }} depth=${{ matrix.depth }} env lr=$LR depth=$DEPTH"
      echo "config $(tr -d '\\n' < /sluice/config.json)"
      echo "matrix $(tr -d '\\n' < /sluice/matrix.json 2>/dev/null || echo missing)"
      case "${{ matrix.lr }}" in 0.1) B=1 ;; 0.2) B=2 ;; *) B=0 ;; esac
      echo "lr=$LR depth=$DEPTH" > /sluice/outputs/seen.txt
      echo "{\\"score\\": $(( B * 10 - (DEPTH - 3) * (DEPTH - 3) ))}" > /sluice/outputs/metrics.json
  - name: report
    needs: [train]
    when: max(steps.train.instances.*.metrics.score) >= 20 and count(steps.train.instances.*.metrics.score) == 6
    run: echo reporting
  - name: hold
    needs: [train]
    when: min(steps.train.instances.*.metrics.score) > 9
    run: echo never
  - name: select
    needs: [train]
    image: PYTHON
    command:
      - python3
      - -c
      - |
        import json, os
        base = "/sluice/inputs/train"
        index = json.load(open(os.path.join(base, "index.json")))
        for entry in index:
            seen = open(os.path.join(base, entry["name"], "seen.txt")).read().split()
            m = entry["matrix"]
            assert seen == [f"lr={m['lr']}", f"depth={m['depth']}"], (entry, seen)
            assert entry["status"] == "succeeded", entry
        best = max(index, key=lambda e: e["metrics"]["score"])
        print("best", best["name"])
        metrics = {"best_score": best["metrics"]["score"], "best_lr": best["matrix"]["lr"],
                   "best_depth": best["matrix"]["depth"], "seen": len(index)}
        json.dump(metrics, open("/sluice/outputs/metrics.json", "w"))
        json.dump(best, open("/sluice/outputs/best.json", "w"))
"""


def run_json(
    repo: Path, *args: str, code: int = 0, env: dict[str, str | None] | None = None
) -> Any:
    """`sluice ARGS --json` in process (`-q` for commands that run steps): its JSON, after
    checking the exit code."""
    quiet = ["-q"] if args[0] in ("run", "retry", "trigger") else []
    done = sluice(*args, "--json", *quiet, repo=repo, env=env)
    assert done.returncode == code, f"exit {done.returncode}:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


def instances_of(manifest: Manifest, group: str) -> list[str]:
    return [n for n, rec in manifest["steps"].items() if rec.get("instance_of") == group]


def log(repo: Path, run_id: str, step: str) -> str:
    done = sluice("logs", run_id, step, repo=repo)
    assert done.returncode == 0, done.stderr
    return done.stdout


def ts(text: str | None) -> float:
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def pipeline(text: str) -> str:
    return text.replace("BUSYBOX", BUSYBOX).replace("PYTHON", PYTHON)


def no_github() -> dict[str, str | None]:
    return {k: None for k in os.environ if k.startswith("GITHUB_")}


# --- one 2x3 grid and its fan-in, shared by the tests that read it ---------------------------


@pytest.fixture(scope="module")
def grid(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[tuple[Path, Manifest]]:
    _image(docker_client, BUSYBOX)
    _image(docker_client, PYTHON)
    repo = make_repo(tmp_path_factory.mktemp("grid"), {"grid.yaml": pipeline(GRID)}, commit="grid")
    manifest = run_json(repo, "run", "grid", "--no-cache", "--max-parallel", "4")
    left = docker_client.containers.list(
        all=True, filters={"label": f"{RUN_LABEL}={manifest['run_id']}"}, sparse=True
    )
    assert left == [], "the grid's run left containers behind"
    yield repo, manifest


def test_a_grid_runs_every_instance_under_its_name(grid: tuple[Path, Manifest]) -> None:
    _, manifest = grid
    assert manifest["status"] == "succeeded"
    assert instances_of(manifest, "train") == GRID_NAMES
    group = manifest["steps"]["train"]
    assert group["status"] == "succeeded"
    assert group["instances"] == GRID_NAMES
    assert group["attempts"] == []  # a group runs no container
    assert "index.json" in group["outputs"]
    for lr in LRS:
        for depth in DEPTHS:
            rec = manifest["steps"][f"train[lr={lr},depth={depth}]"]
            assert rec["status"] == "succeeded"
            assert rec["matrix"] == {"lr": lr, "depth": depth}
            assert len(rec["attempts"]) == 1
            assert rec["metrics"] == {"score": (10 if lr == 0.1 else 20) - (depth - 3) ** 2}
    assert manifest["steps"]["select"]["needs"] == ["train"]


def test_each_instance_sees_its_values_in_run_env_and_config(grid: tuple[Path, Manifest]) -> None:
    repo, manifest = grid
    for lr in LRS:
        for depth in DEPTHS:
            text = log(repo, manifest["run_id"], f"train[lr={lr},depth={depth}]")
            assert f"run lr={lr} depth={depth} env lr={lr} depth={depth}\n" in text
            config = json.loads(text.split("config ", 1)[1].splitlines()[0])
            assert config == {"lr": lr, "depth": depth, "label": f"d={depth}"}


def test_each_instance_finds_its_values_in_sluice_matrix_json(grid: tuple[Path, Manifest]) -> None:
    repo, manifest = grid
    for lr in LRS:
        for depth in DEPTHS:
            text = log(repo, manifest["run_id"], f"train[lr={lr},depth={depth}]")
            shown = text.split("matrix ", 1)[1].splitlines()[0]
            assert shown != "missing", "/sluice/matrix.json is not in the instance's container"
            assert json.loads(shown) == {"lr": lr, "depth": depth}


def test_show_json_has_every_instance_record(grid: tuple[Path, Manifest]) -> None:
    repo, manifest = grid
    shown = run_json(repo, "show", manifest["run_id"])
    assert shown["run_id"] == manifest["run_id"]
    assert shown["steps"]["train"]["instances"] == GRID_NAMES
    for name in GRID_NAMES:
        rec = shown["steps"][name]
        assert rec["instance_of"] == "train"
        assert rec["matrix"] == manifest["steps"][name]["matrix"]
        assert rec["status"] == "succeeded"
    text = sluice("show", manifest["run_id"], repo=repo)
    assert text.returncode == 0, text.stderr
    for name in GRID_NAMES:
        assert name in text.stdout


def test_when_reads_aggregates_over_the_instances(grid: tuple[Path, Manifest]) -> None:
    _, manifest = grid
    steps = manifest["steps"]
    assert steps["report"]["status"] == "succeeded", steps["report"].get("reason")  # max 20
    assert steps["hold"]["status"] == "skipped", steps["hold"].get("reason")  # min is 9
    assert steps["hold"]["attempts"] == []


def test_a_fan_in_step_picks_the_best_instance_from_index_json(
    grid: tuple[Path, Manifest],
) -> None:
    repo, manifest = grid
    select = manifest["steps"]["select"]
    assert select["status"] == "succeeded", select.get("reason")
    assert select["metrics"] == {"best_score": 20, "best_lr": 0.2, "best_depth": 3, "seen": 6}
    assert "best train[lr=0.2,depth=3]\n" in log(repo, manifest["run_id"], "select")
    to = repo.parent / "best"
    copied = sluice("outputs", manifest["run_id"], "select", "--to", str(to), repo=repo)
    assert copied.returncode == 0, copied.stderr
    chosen = json.loads((to / "best.json").read_text())
    assert chosen["name"] == "train[lr=0.2,depth=3]"
    assert chosen["matrix"] == {"lr": 0.2, "depth": 3}
    assert chosen["status"] == "succeeded"
    assert chosen["metrics"] == {"score": 20}


# --- include / exclude ------------------------------------------------------------------------

INCLUDE = """
name: shapes
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: fit
    matrix:
      model: [tree, forest]
      size: [1, 2]
      exclude:
        - {model: tree, size: 2}
      include:
        - {model: tree, color: red}
        - {model: forest, size: 2, extra: big}
        - {model: boost, size: 9}
    env: {MODEL: "${{ matrix.model }}"}
    run: 'echo "fit $MODEL ${{ matrix.size }}"'
"""


def test_include_and_exclude_make_the_right_instances(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(tmp_path, {"shapes.yaml": pipeline(INCLUDE)}, commit="shapes")
    manifest = run_json(repo, "run", "shapes", "--no-cache")
    expected = {
        "fit[model=tree,size=1,color=red]": {"model": "tree", "size": 1, "color": "red"},
        "fit[model=forest,size=1]": {"model": "forest", "size": 1},
        "fit[model=forest,size=2,extra=big]": {"model": "forest", "size": 2, "extra": "big"},
        "fit[model=boost,size=9]": {"model": "boost", "size": 9},
    }
    assert instances_of(manifest, "fit") == list(expected)
    assert manifest["steps"]["fit"]["instances"] == list(expected)
    for name, values in expected.items():
        assert manifest["steps"][name]["matrix"] == values
        assert manifest["steps"][name]["status"] == "succeeded"
    assert "fit boost 9" in log(repo, manifest["run_id"], "fit[model=boost,size=9]")


# --- foreach over a list param from a workflow_dispatch input -------------------------------

REGIONS = """
name: regions
params: {regions: [eu]}
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: score
    foreach: "${{ params.regions }}"
    run: 'echo "scoring ${{ matrix.item }}"'
"""


def test_foreach_over_a_list_param_given_by_a_workflow_dispatch_input(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"regions.yaml": pipeline(REGIONS)}, commit="regions")
    payload = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "regions", "params": "", "regions": "eu,us,apac"}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    runs = run_json(
        repo,
        *("trigger", "--no-push", "--event-name", "workflow_dispatch"),
        *("--event-path", str(event)),
        env=no_github(),
    )
    [manifest] = runs
    assert manifest["trigger"]["kind"] == "workflow_dispatch"
    assert manifest["params"] == {"regions": ["eu", "us", "apac"]}
    names = ["score[eu]", "score[us]", "score[apac]"]
    assert instances_of(manifest, "score") == names
    assert [manifest["steps"][n]["matrix"] for n in names] == [
        {"item": "eu"},
        {"item": "us"},
        {"item": "apac"},
    ]
    assert manifest["steps"]["score"]["status"] == "succeeded"
    assert "scoring apac" in log(repo, manifest["run_id"], "score[apac]")


# --- failures ---------------------------------------------------------------------------------

SWEEP = """
name: sweep
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: train
    foreach: [a, b, c]
    ALLOW
    run: |
      echo '{"n": 1}' > /sluice/outputs/metrics.json
      echo "item ${{ matrix.item }}"
      [ "${{ matrix.item }}" != b ]
  - name: after
    needs: [train]
    run: cat /sluice/inputs/train/index.json
"""
ITEMS = ["train[a]", "train[b]", "train[c]"]


def test_a_failing_instance_fails_the_sweep_and_its_dependents(
    tmp_path: Path, busybox_image: str
) -> None:
    text = pipeline(SWEEP).replace("ALLOW", "fail_fast: false")
    repo = make_repo(tmp_path, {"sweep.yaml": text}, commit="sweep")
    manifest = run_json(repo, "run", "sweep", "--no-cache", code=1)
    assert manifest["status"] == "failed"
    steps = manifest["steps"]
    assert [steps[n]["status"] for n in ITEMS] == ["succeeded", "failed", "succeeded"]
    assert steps["train[b]"]["attempts"][0]["exit_code"] == 1
    assert steps["train"]["status"] == "failed"
    assert steps["after"]["status"] == "upstream_failed"
    assert steps["after"]["attempts"] == []
    # recorded: on the results branch (sluice show) and in the run's folder
    shown = run_json(repo, "show", manifest["run_id"])
    assert shown["status"] == "failed"
    assert shown["steps"]["train"]["status"] == "failed"
    assert shown["steps"]["train[b]"]["status"] == "failed"
    saved = repo / ".sluice" / "runs" / manifest["run_id"] / "manifest.json"
    assert json.loads(saved.read_text())["steps"]["train"]["status"] == "failed"


def test_allow_failures_lets_the_sweep_succeed_and_index_json_lists_the_failure(
    tmp_path: Path, busybox_image: str
) -> None:
    text = pipeline(SWEEP).replace("ALLOW", "allow_failures: 1")
    repo = make_repo(tmp_path, {"sweep.yaml": text}, commit="sweep")
    manifest = run_json(repo, "run", "sweep", "--no-cache")
    steps = manifest["steps"]
    assert manifest["status"] == "succeeded"
    assert steps["train[b]"]["status"] == "failed"
    assert steps["train"]["status"] == "succeeded"
    assert steps["after"]["status"] == "succeeded"
    index = json.loads(log(repo, manifest["run_id"], "after"))
    assert [(e["name"], e["status"]) for e in index] == [
        ("train[a]", "succeeded"),
        ("train[b]", "failed"),
        ("train[c]", "succeeded"),
    ]
    assert [e["matrix"] for e in index] == [{"item": "a"}, {"item": "b"}, {"item": "c"}]
    assert index[0]["metrics"] == {"n": 1}


RETRY = """
name: again
defaults: {image: BUSYBOX}
steps:
  - name: train
    foreach: [a, b, c]
    run: |
      echo "${{ matrix.item }}" > /sluice/outputs/out.txt
      [ "${{ matrix.item }}" != b ] || [ -f fixed.txt ]
  - name: after
    needs: [train]
    workspace: false
    run: |
      echo "outputs $(cat /sluice/inputs/train/*/out.txt | tr '\\n' ' ')"
      cat /sluice/inputs/train/index.json
"""


def test_retry_of_a_partly_failed_sweep_reruns_only_the_failed_instance(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"again.yaml": pipeline(RETRY)}, commit="again")
    failed = run_json(repo, "run", "again", "--no-cache", code=1)
    assert failed["steps"]["train[b]"]["status"] == "failed"
    assert failed["steps"]["train"]["status"] == "failed"

    (repo / "fixed.txt").write_text("the fix\n")  # what train[b] was missing
    retried = run_json(repo, "retry", failed["run_id"])
    steps = retried["steps"]
    assert retried["trigger"]["kind"] == "retry"
    assert retried["status"] == "succeeded"
    for name in ("train[a]", "train[c]"):
        assert steps[name]["status"] == "cached", name
        assert steps[name]["cached_from"] == failed["run_id"], name
        assert steps[name]["attempts"] == [], name
    assert steps["train[b]"]["status"] == "succeeded"
    assert len(steps["train[b]"]["attempts"]) == 1
    assert steps["train[b]"]["cached_from"] is None
    assert steps["train"]["status"] == "succeeded"
    assert steps["after"]["status"] == "succeeded"
    # the fan-in sees the reused instances' outputs beside the rerun one's
    outputs, index_text = log(repo, retried["run_id"], "after").split("\n", 1)
    assert outputs == "outputs a b c "
    index = json.loads(index_text)
    assert [e["name"] for e in index] == ITEMS
    assert [e["status"] for e in index] == ["cached", "succeeded", "cached"]


# --- caching ----------------------------------------------------------------------------------

CACHED = """
name: cached
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: train
    matrix:
      lr: [0.1, 0.2]
      seed: [7]
    run: |
      echo "lr ${{ matrix.lr }} seed ${{ matrix.seed }}"
      echo "${{ matrix.lr }}" > /sluice/outputs/lr.txt
  - name: pick
    needs: [train]
    run: cat /sluice/inputs/train/*/lr.txt
"""


def test_a_rerun_with_one_value_changed_runs_only_the_new_instances(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"cached.yaml": pipeline(CACHED)}, commit="sweep")
    first = run_json(repo, "run", "cached")
    assert [first["steps"][n]["status"] for n in instances_of(first, "train")] == [
        "succeeded",
        "succeeded",
    ]
    path = repo / "pipelines" / "cached.yaml"
    path.write_text(path.read_text().replace("[0.1, 0.2]", "[0.1, 0.3]"))
    git(repo, "commit", "-q", "-am", "lr 0.3 instead of 0.2")

    second = run_json(repo, "run", "cached")
    steps = second["steps"]
    assert instances_of(second, "train") == ["train[lr=0.1,seed=7]", "train[lr=0.3,seed=7]"]
    kept = steps["train[lr=0.1,seed=7]"]
    assert kept["status"] == "cached"
    assert kept["cached_from"] == first["run_id"]
    assert kept["attempts"] == []
    new = steps["train[lr=0.3,seed=7]"]
    assert new["status"] == "succeeded"
    assert len(new["attempts"]) == 1
    assert "lr 0.3 seed 7" in log(repo, second["run_id"], "train[lr=0.3,seed=7]")
    assert steps["train"]["status"] == "succeeded"
    # the step after the sweep runs again (its inputs changed) and sees both instances'
    # outputs, the cached one's included
    assert steps["pick"]["status"] == "succeeded"
    assert log(repo, second["run_id"], "pick").split() == ["0.1", "0.3"]


# --- max_parallel -----------------------------------------------------------------------------

CAPPED = """
name: capped
defaults: {image: BUSYBOX, workspace: false}
steps:
  - name: nap
    foreach: [1, 2, 3, 4, 5, 6]
    max_parallel: 2
    run: sleep 1
"""


def test_max_parallel_caps_a_sweeps_instances_below_the_runs_limit(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"capped.yaml": pipeline(CAPPED)}, commit="capped")
    manifest = run_json(repo, "run", "capped", "--no-cache", "--max-parallel", "6")
    names = instances_of(manifest, "nap")
    assert names == [f"nap[{i}]" for i in range(1, 7)]
    intervals = [
        (ts(a["started_at"]), ts(a["finished_at"]))
        for name in names
        for a in manifest["steps"][name]["attempts"]
    ]
    assert len(intervals) == 6
    assert peak_overlap(intervals) == 2
