"""The GitHub workflow that runs the repository's pipelines: what `generate` writes, `check` compares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from croniter import croniter

from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
from engine.core.config import RepoConfig
from engine.core.gh_workflow import (
    DEFAULT_PATH,
    WorkflowOptions,
    diff,
    keep_uses,
    parse_uses,
    render,
)
from engine.errors import UsageError


@dataclass(frozen=True)
class Wanted:
    """The workflow file to write or check, and how to render it."""

    repo: Path
    config: RepoConfig
    output: str | None
    uses: str | None
    tick: str | None

    @property
    def path(self) -> Path:
        return Path(self.output) if self.output else self.repo / DEFAULT_PATH

    @property
    def shown(self) -> str:
        return display_path(self.path, self.repo)

    def text(self, existing: str) -> str:
        """The workflow as `generate` writes it, keeping the existing file's `uses:` lines."""
        folder = self.repo / self.config.pipelines
        loaded = load_many(find_pipeline_files(folder), self.repo)  # PipelineInvalid: exit 2
        if not loaded:
            shown = display_path(folder, self.repo)
            raise UsageError(f"no pipelines in {shown}: there is nothing for a workflow to run")
        options = WorkflowOptions(
            pipelines_folder=display_path(folder, self.repo),
            results_branch=self.config.results.branch,
            env=self.config.workflow.env,
            permissions={str(k): str(v) for k, v in self.config.workflow.permissions.items()},
            steps_before=tuple(self.config.workflow.steps_before),
        )
        options = _override(keep_uses(options, existing), self.uses, self.tick)
        return render([(p.file, p.pipeline) for p in loaded], options)

    def diff(self, existing: str) -> str:
        """A unified diff from the file as it is to what `generate` would write ('' when equal)."""
        return diff(existing, self.text(existing), self.shown)


def _override(options: WorkflowOptions, uses: str | None, tick: str | None) -> WorkflowOptions:
    if uses is not None:
        parsed = parse_uses(uses)
        if parsed is None:
            raise UsageError(
                f"--uses {uses!r}: give OWNER/REPO@REF, e.g. 'my-org/sluice@<commit>  # v1.2.0'"
            )
        options = replace(options, action=parsed[0], action_comment=parsed[1])
    if tick is not None:
        if len(tick.split()) != 5 or not croniter.is_valid(tick):
            raise UsageError(f"--tick {tick!r} is not a 5-field cron expression")
        options = replace(options, tick=" ".join(tick.split()))
    return options


def read(path: Path) -> str | None:
    """The file's text; None when it does not exist."""
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
