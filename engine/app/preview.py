"""Pull-request previews after their runs: one sticky comment per pipeline on the pull
request, and the whole report in the job summary (docs/pull-requests.md).

A comment that cannot be posted is one warning, never a failed job: a fork's token is
read-only, and a workflow may not grant `pull-requests: write`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from engine.adapters import github_ci
from engine.adapters import github_env as github
from engine.adapters.github_api import DEFAULT_API
from engine.adapters.github_comments import CommentFailed, Comments
from engine.app import compose
from engine.app.report import history, pipeline_directions
from engine.core import pr_comment
from engine.core.config import RepoConfig
from engine.core.layout import DEFAULT_ARTIFACTS
from engine.core.manifest import RunManifest
from engine.core.parse import LoadedPipeline
from engine.core.preview import is_preview_run
from engine.errors import SluiceError
from engine.local.workspace import is_git_repo
from engine.ports import ResultsBranch
from engine.run.options import RunOptions
from engine.run.records import History

HISTORY_RUNS = 20  # base-branch runs on the chart
_SCAN = 5  # runs read per chart point: other branches' runs and previews are left out


def pushes(run_payload: Mapping[str, object], push: bool | None) -> bool | None:
    """The push mode of a preview: never for a fork's pull request (its token is read-only,
    and its code must not write the results branch), else as asked."""
    return False if run_payload.get("fork") is True else push


def fork_options(
    options: RunOptions, config: RepoConfig, repo: Path, log: Callable[[str], None]
) -> None:
    """A fork's preview keeps its outputs on the runner: a remote artifact store needs
    credentials GitHub does not give a fork's workflow, and nothing of the run is kept."""
    url = config.artifacts
    if "://" not in url or url.startswith("file://"):
        return
    local = config.model_copy(update={"artifacts": DEFAULT_ARTIFACTS})
    options.artifacts = compose.artifact_store(local, repo)
    log(
        "sluice: a fork's preview stores its outputs on the runner "
        f"({DEFAULT_ARTIFACTS}), not in {config.artifacts}: it has no credentials for it"
    )


def on_base(manifest: RunManifest, base_ref: str) -> bool:
    """Whether a run counts as the base branch's: no preview, and a CI ref (when it has
    one) naming that branch."""
    if is_preview_run(manifest):
        return False
    ref = (manifest.ci or {}).get("ref")
    return not isinstance(ref, str) or ref in (f"refs/heads/{base_ref}", base_ref)


def gather(
    store: ResultsBranch, manifest: RunManifest, loaded: LoadedPipeline | None, branch: str
) -> pr_comment.Preview:
    """What the comment of `manifest` (a preview run) shows, read from the results branch."""
    payload = manifest.trigger.payload
    base_ref = str(payload.get("base_ref") or "main")
    production = None
    if loaded is not None and loaded.pipeline.baseline is not None:
        production = History(store).production(manifest.pipeline, loaded.pipeline.baseline.step)
        if production is not None and production.run_id == manifest.run_id:
            production = None
    found = history(store, manifest.pipeline, HISTORY_RUNS * _SCAN)
    runs = [m for m in found if m.run_id != manifest.run_id and on_base(m, base_ref)]
    runs = runs[-HISTORY_RUNS:]
    return pr_comment.Preview(
        run=manifest,
        dag=loaded.dag if loaded is not None else None,
        directions=pipeline_directions(loaded),
        production=production,
        base_latest=runs[-1] if runs else None,
        history=runs,
        base_ref=base_ref,
        run_url=github_ci.run_url(manifest.ci),
        manifest_url=github_ci.manifest_url(
            manifest.ci, branch, manifest.pipeline, manifest.run_id
        ),
        pushed=payload.get("fork") is not True,
    )


def previews(
    repo: Path,
    config: RepoConfig,
    manifests: Sequence[RunManifest],
    pipelines: Sequence[LoadedPipeline],
    log: Callable[[str], None],
) -> list[pr_comment.Preview]:
    """Each preview run's comment data; [] outside a git repository (no results branch)."""
    wanted = [m for m in manifests if is_preview_run(m)]
    if not wanted or not is_git_repo(repo):
        return []
    by_name = {p.name: p for p in pipelines}
    try:
        with compose.reading_branch(repo, config) as store:
            return [
                gather(store, m, by_name.get(m.pipeline), config.results.branch) for m in wanted
            ]
    except SluiceError as exc:
        log(f"sluice: warning: the preview report could not read the results branch: {exc}")
        return []


def summary(found: Sequence[pr_comment.Preview]) -> str:
    """The job summary's part: every preview's whole report (never cut)."""
    return "\n".join(pr_comment.body(p, limit=None) for p in found)


def post_comments(
    found: Sequence[pr_comment.Preview],
    env: Mapping[str, str],
    log: Callable[[str], None],
    warn: Callable[[str], None],
) -> list[str]:
    """Create or edit each pipeline's comment; what happened, a line each. The first
    refusal is one warning, and no further comment is tried."""
    done: list[str] = []
    if not found:
        return done
    token = env.get("GITHUB_TOKEN", "")
    if not token.strip():
        log("sluice: no GITHUB_TOKEN: the preview comment is not posted (the summary has it)")
        return done
    for preview in found:
        payload = preview.run.trigger.payload
        number = payload.get("number")
        repository = env.get("GITHUB_REPOSITORY") or payload.get("base_repo")
        if not isinstance(number, int) or not isinstance(repository, str):
            warn("the preview comment is not posted: the event names no pull request")
            return done
        try:
            comments = Comments(
                repository,
                number,
                token=token,
                api_url=env.get("GITHUB_API_URL") or DEFAULT_API,
            )
            posted = comments.upsert(
                pr_comment.marker(preview.run.pipeline), pr_comment.body(preview)
            )
        except (CommentFailed, SluiceError) as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            warn(f"the preview comment was not posted: {exc.message}{hint}")
            return done
        line = f"sluice: {preview.run.pipeline}: comment {posted.comment_id} on #{number} {posted.action}"
        log(line)
        done.append(line)
    return done


def publish(
    repo: Path,
    config: RepoConfig,
    manifests: Sequence[RunManifest],
    pipelines: Sequence[LoadedPipeline],
    env: Mapping[str, str],
    log: Callable[[str], None],
) -> list[pr_comment.Preview]:
    """Comment on the pull request and add the reports to the job summary."""
    found = previews(repo, config, manifests, pipelines, log)
    if not found:
        return found
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with contextlib.suppress(OSError):
            github.append_summary(Path(summary_path), summary(found))

    def warn(text: str) -> None:
        if github.in_actions(env):
            log(f"::warning title=Sluice preview comment::{_command_data(text)}")
        else:
            log(f"sluice: warning: {text}")

    post_comments(found, env, log, warn)
    return found


def _command_data(text: str) -> str:
    """Text safe as a workflow command's data (one line, no command can ride in)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
