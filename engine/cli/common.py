"""What every `sluice` command shares: State, exit codes, click settings and output helpers."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from engine.core.printable import inert, printable
from engine.core.suggest import counted
from engine.errors import Problem, SluiceError, UsageError

if TYPE_CHECKING:
    from engine.adapters.git_results import ResultsStore
    from engine.core.config import RepoConfig
    from engine.core.parse import LoadedPipeline

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_ENGINE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PUSH_HELP = "Push results to the remote (default: when one exists)."


@dataclass
class State:
    """The global options: which repository, which settings file (both resolved on first use)."""

    repo_option: str | None
    config_option: str | None
    _config: RepoConfig | None = None

    @property
    def repo(self) -> Path:
        from engine.local.workspace import find_repo_root  # lazy: keeps `sluice --help` light

        if self.repo_option:
            path = Path(self.repo_option)
            if not path.is_dir():
                raise UsageError(f"--repo {self.repo_option}: no such folder")
            return path.resolve()
        return find_repo_root(Path.cwd())

    @property
    def config(self) -> RepoConfig:
        if self._config is None:
            path = Path(self.config_option) if self.config_option else None
            if path is None and not (self.repo / "sluice.yaml").exists():
                from engine.core.config import RepoConfig  # lazy: pydantic, not for --help

                self._config = RepoConfig()  # no file: skip the (heavier) parser
            else:
                from engine.adapters.pipeline_files import load_repo_config  # lazy: the parser

                self._config = load_repo_config(self.repo, path)
        return self._config

    @property
    def pipelines_dir(self) -> Path:
        return self.repo / self.config.pipelines

    def reading_store(self, fetch: bool) -> ResultsStore:
        from engine.app import compose  # lazy: git adapter, only once a command runs

        return compose.reading_branch(self.repo, self.config, fetch=fetch)

    def pipeline(self, ref: str) -> LoadedPipeline:
        from engine.adapters.pipeline_files import find_pipeline  # lazy: the pipeline parser

        found = find_pipeline(self.repo, self.pipelines_dir, ref)
        assert found is not None
        return found


def exit_with(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def json_out(text: str) -> str:
    """JSON for stdout: inside GitHub Actions a string holding the runner's legacy command
    form `##[` gets its second `#` as `\\u0023`, the same JSON, never a command."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return text.replace("##[", "#\\u0023[")
    return text


def echo_json(value: Any) -> None:
    click.echo(json_out(json.dumps(value, indent=2)))


def shown(line: str) -> str:
    """One line as printed: control characters escaped (untrusted names cannot move the
    cursor or forge a line) and, inside GitHub Actions, never a workflow command."""
    line = printable(line, tabs=True)
    return inert(line) if os.environ.get("GITHUB_ACTIONS") == "true" else line


def say(text: str) -> None:
    """Lines on stderr (progress and notes; stdout is for results), each one `shown`."""
    click.echo("\n".join(shown(line) for line in text.split("\n")), err=True)


def annotate(problems: list[Problem]) -> None:
    """GitHub workflow-command annotations, so problems show on the pull request's files."""
    from engine.adapters import github_env as github  # lazy: only on an error path

    github.annotate(problems, os.environ, sys.stderr)


# The commands that write outputs to the artifact store or read them back from it.
STORE_COMMANDS = frozenset({"run", "retry", "approve", "reject", "trigger", "tick"})


def warn_ephemeral_store(state: State) -> None:
    """On a GitHub runner, one `::warning::` and one job-summary line when the artifact
    store is a folder inside the workspace: it ends with the job (github_ci)."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    from engine.adapters import github_ci  # lazy: only on a runner
    from engine.adapters import github_env as github  # lazy: as above

    try:
        why = github_ci.ephemeral_store(state.config.artifacts, state.repo, os.environ)
    except SluiceError:
        return  # no repository, invalid settings: the command itself says so
    if why is None:
        return
    print(
        f"::warning title=Sluice: outputs will not last::{github.escape_data(why)}", file=sys.stderr
    )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        github.append_summary(Path(summary), github.STORE_WARNING + github.markdown_text(why))


def problems_exit(problems: list[Problem], tail: str) -> NoReturn:
    """Print every problem (and annotate it), then `N problems in M files<tail>`; exit 2."""
    for problem in problems:
        say(printable(str(problem)))  # a name with a line break stays on its problem's line
    annotate(problems)
    files = len({p.file for p in problems})
    say(f"sluice: {counted(len(problems), 'problem')} in {counted(files, 'file')}{tail}")
    exit_with(EXIT_INVALID)


def runs_exit_code(statuses: Iterable[str]) -> int:
    """The exit code of a command that ran these runs: the worst of them decides."""
    found = set(statuses)
    if "cancelled" in found:
        return EXIT_INTERRUPTED
    if "error" in found:
        return EXIT_ENGINE
    if "failed" in found:
        return EXIT_FAILED
    return EXIT_OK


def install_signal_handlers(cancel: Callable[[], None]) -> None:
    """SIGINT, SIGTERM, SIGHUP cancel (containers are removed); the third one exits at once."""
    count = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        count["n"] += 1
        if count["n"] >= 3:  # the user insists: stop waiting for cleanup
            os._exit(EXIT_INTERRUPTED)
        cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


push_option = click.option("--push/--no-push", default=None, help=PUSH_HELP)
