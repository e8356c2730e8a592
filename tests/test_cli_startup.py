"""`sluice --help` lists every command without importing one (engine/cli/main.py: COMMANDS);
the table must stay true to the commands themselves."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from engine.cli import common, main
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
