"""`sluice --help` lists every command without importing one (engine/cli/main.py: COMMANDS);
the table must stay true to the commands themselves. Commands import only what they use: a
pipeline from the cache loads no YAML parser, `runs` and `show` no run machinery, a fully
cached re-run no Docker SDK; models are built once (issue 16)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from engine.cli import common, main
from engine.local.pipeline_cache import DISABLE_ENV
from tests.conftest import make_repo, sluice


def real(name: str) -> click.Command:
    module, attribute, _ = main.COMMANDS[name]
    command = getattr(importlib.import_module(f"engine.cli.{module}"), attribute)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", sorted(main.COMMANDS))
def test_each_listed_command_is_the_real_one_with_its_own_summary(name: str) -> None:
    command = real(name)
    assert command.name == name
    stand_in = click.Command(name, help=main.COMMANDS[name][2])
    for limit in (20, 45, 64, 80, 120, 200):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), limit


def test_the_group_settings_are_commons() -> None:
    assert main.CONTEXT == common.CONTEXT
    assert (main.EXIT_OK, main.EXIT_INVALID, main.EXIT_INTERRUPTED) == (
        common.EXIT_OK,
        common.EXIT_INVALID,
        common.EXIT_INTERRUPTED,
    )


@pytest.mark.parametrize("width", [50, 80, 100])
def test_help_is_the_same_with_every_command_loaded(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = main.cli
    assert isinstance(group, main.LazyGroup)
    monkeypatch.setattr(group, "commands", {})  # as in a fresh process: nothing loaded

    def help_text() -> str:
        return group.get_help(click.Context(group, info_name="sluice", terminal_width=width))

    lazy = help_text()
    assert group.commands == {}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        assert group.get_command(ctx, name) is real(name)
    assert set(group.commands) == set(main.COMMANDS)
    assert help_text() == lazy
    assert "validate  Check pipeline files" in lazy
    assert group.get_command(ctx, "no-such-command") is None


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys, json\n"
        "from engine.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('engine', 'pydantic')))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == ["engine", "engine.cli", "engine.cli.main"]


def test_a_command_still_loads_and_reports_errors(tmp_path: Path) -> None:
    done = sluice("no-such-command")
    assert done.returncode == 2 and "no-such-command" in done.stderr
    repo = make_repo(tmp_path, {"bad.yaml": "name: bad\nsteps:\n  - name: a\n    retries: x\n"})
    done = sluice("validate", repo=repo, process=True)
    assert done.returncode == 2
    assert "pipelines/bad.yaml:4:" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# --- what a command imports (issue 16): nothing it does not use --------------------------

# Imported by no command that only reads records or takes its pipeline from the cache.
PARSER = ("yaml", "engine.core.yaml_lines", "engine.core.checks", "engine.core.schema_problems")
RUN_MACHINERY = ("engine.run.executor", "engine.app.runs", "engine.app.drift_follow")
HEAVY = ("docker", "requests", "fsspec", "rich", "croniter")

CHAIN = """\
name: chain
defaults: {image: IMAGE, workspace: false}
steps:
  - {name: s0, run: 'echo 0 > /sluice/outputs/out.txt'}
  - {name: s1, needs: [s0], run: 'cat /sluice/inputs/s0/out.txt > /sluice/outputs/out.txt'}
  - {name: s2, needs: [s1], run: 'cat /sluice/inputs/s1/out.txt > /sluice/outputs/out.txt'}
"""

# A child process: run `sluice ARGS` (sys.argv[1:]) as the console script does, then print
# which modules it had imported, as the last line of stdout.
MODULES_AFTER = (
    "import json, sys\n"
    "from engine.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)


def modules_after(repo: Path, *args: str, env: dict[str, str]) -> tuple[int | None, set[str], str]:
    """The exit code of `sluice ARGS` run in a child process in `repo`, the modules it
    imported, and its stdout before them."""
    done = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER, *args],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
        check=False,
        timeout=300,
    )
    *said, last = done.stdout.strip().splitlines() or [""]
    assert last.startswith("{"), done.stderr
    found = json.loads(last)
    assert found["code"] in (0, None), done.stderr
    return found["code"], set(found["modules"]), "\n".join(said)


def child_env(tmp_path: Path) -> dict[str, str]:
    """This environment, with the pipeline cache's key under `tmp_path` and outside Actions."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", DISABLE_ENV)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "user-cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def test_a_pipeline_from_the_cache_loads_no_yaml_parser_nor_checks(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"chain.yaml": CHAIN.replace("IMAGE", "img")})
    env = child_env(tmp_path)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from engine.adapters.pipeline_files import load_file\n"
        "loaded = load_file(Path('pipelines/chain.yaml'), Path('.'))\n"
        "before = sorted(sys.modules)\n"
        "line = loaded.lines.key_line(('steps', 2, 'run'))\n"
        "print(json.dumps({'steps': [s.name for s in loaded.steps], 'line': line,"
        " 'before': before, 'after': sorted(sys.modules)}))\n"
    )

    def load() -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result

    first, again = load(), load()  # the first parses the file and stores it; then a hit
    assert first["steps"] == again["steps"] == ["s0", "s1", "s2"]
    assert set(PARSER) <= set(first["before"])
    assert not set(PARSER) & set(again["before"]), "a cache hit loaded the parser"
    assert "croniter" not in again["before"]
    # a message asks for a line: then the file's text is composed, and the line is right
    assert first["line"] == again["line"] == 6
    assert "yaml" in again["after"]


def test_runs_and_show_load_no_run_machinery(tmp_path: Path) -> None:
    from engine.adapters.fake_runtime import FakeRuntime
    from engine.adapters.pipeline_files import load_file
    from engine.app.execution import execute, run_options
    from engine.core.config import RepoConfig
    from engine.core.manifest import Trigger

    repo = make_repo(tmp_path, {"chain.yaml": CHAIN.replace("IMAGE", "img")}, commit="chain")
    loaded = load_file(repo / "pipelines" / "chain.yaml", repo)
    options = run_options(repo, RepoConfig(), loaded, trigger=Trigger(kind="manual"))
    manifest = execute(repo, loaded, options, runtime=FakeRuntime())
    assert manifest.status.value == "succeeded"
    env = child_env(tmp_path)
    for args in (("runs", "--limit", "20"), ("show", manifest.run_id)):
        _, modules, _ = modules_after(repo, *args, env=env)
        assert "engine.core.manifest" in modules  # it did read the record
        unused = set(PARSER + RUN_MACHINERY + HEAVY) & modules
        assert not unused, f"`sluice {' '.join(args)}` imported {sorted(unused)}"
        assert "engine.adapters.artifacts" not in modules


@pytest.mark.docker
def test_a_cached_rerun_loads_neither_docker_nor_the_parser(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"chain.yaml": CHAIN.replace("IMAGE", busybox_image)}, commit="c")
    env = child_env(tmp_path)
    first = sluice("run", "chain", "-q", "--json", cwd=repo, env=env, process=True)
    assert first.returncode == 0, first.stderr
    _, modules, stdout = modules_after(repo, "run", "chain", "-q", "--json", env=env)
    steps = json.loads(stdout)["steps"]
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(
        ("s0", "s1", "s2"), "cached"
    )
    unused = {"docker", "requests", "croniter", *PARSER} & modules
    assert not unused, f"a fully cached re-run imported {sorted(unused)}"


def test_models_are_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading from the cache, reading and writing records rebuild no model and make none."""
    from pydantic import BaseModel

    from engine.adapters.pipeline_files import load_file
    from engine.core.config import RepoConfig
    from engine.core.manifest import RunManifest

    def models() -> dict[type[BaseModel], tuple[int, int]]:
        found: dict[type[BaseModel], tuple[int, int]] = {}
        todo = list(BaseModel.__subclasses__())
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            if cls.__module__.startswith("engine.") and cls.__pydantic_complete__:
                found[cls] = (id(cls.__pydantic_validator__), id(cls.__pydantic_serializer__))
        return found

    repo = make_repo(tmp_path, {"chain.yaml": CHAIN.replace("IMAGE", "img")})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    load_file(repo / "pipelines" / "chain.yaml", repo)  # stored
    before = models()
    assert before, "no engine model found"
    for _ in range(3):
        loaded = load_file(repo / "pipelines" / "chain.yaml", repo)  # a hit
        RepoConfig()
        manifest = RunManifest(
            run_id="20261203T000000Z-abcdef",
            pipeline=loaded.name,
            pipeline_file=loaded.file,
            pipeline_sha256=loaded.sha256,
            started_at="2026-12-03T00:00:00Z",
        )
        assert RunManifest.model_validate_json(manifest.to_json()) == manifest
    assert models() == before


def test_the_cycle_collector_stays_out_of_start_up(tmp_path: Path) -> None:
    """A command's imports make tens of thousands of objects: the collector is not run over
    them again and again (main raises its threshold for the process)."""
    repo = make_repo(tmp_path, {"chain.yaml": CHAIN.replace("IMAGE", "img")})
    code = (
        "import gc, json, sys\n"
        "from engine.cli.main import main\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(phase) if phase == 'stop' else None)\n"
        "try:\n"
        "    main(['validate'])\n"
        "except SystemExit as exc:\n"
        "    print(json.dumps({'code': exc.code, 'collections': len(runs),"
        " 'objects': len(gc.get_objects())}))\n"
    )
    env = child_env(tmp_path)
    env[DISABLE_ENV] = "off"  # parse the file: the most a start-up allocates
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env
    )
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["code"] in (0, None), done.stderr
    assert found["objects"] > 20_000  # what there was to collect over
    assert found["collections"] <= 1, found
