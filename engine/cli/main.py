"""The `sluice` command line: builds the real adapters and maps errors to exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from engine import __version__
from engine.errors import PipelineInvalid, Problem, SluiceError, UsageError, json_object

if TYPE_CHECKING:
    from engine.adapters.git_results import ResultsStore
    from engine.core.config import RepoConfig
    from engine.core.manifest import RunManifest
    from engine.core.parse import LoadedPipeline
    from engine.run.executor import RunOptions

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class State:
    repo_option: str | None
    config_option: str | None
    _config: RepoConfig | None = None

    @property
    def repo(self) -> Path:
        from engine.local.workspace import find_repo_root

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
                from engine.core.config import RepoConfig  # no file: skip the (heavier) loader

                self._config = RepoConfig()
            else:
                from engine.adapters.pipeline_files import load_repo_config

                self._config = load_repo_config(self.repo, path)
        return self._config

    @property
    def pipelines_dir(self) -> Path:
        return self.repo / self.config.pipelines

    def reading_store(self, fetch: bool) -> ResultsStore:
        from engine.adapters.git_results import store_for

        store = store_for(self.repo, self.config, push=False)
        if store is None:
            raise UsageError(
                f"{self.repo} is not a git repository: there is no results branch to read"
            )
        if fetch:
            store.fetch()
        return store

    def pipeline(self, ref: str) -> LoadedPipeline:
        from engine.adapters.pipeline_files import find_pipeline

        found = find_pipeline(self.repo, self.pipelines_dir, ref)
        assert found is not None
        return found


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _annotate(problems: list[Problem]) -> None:
    """GitHub workflow-command annotations, so problems show on the pull request's files."""
    from engine.adapters import github_env as github  # only on an error path: keeps start-up light

    github.annotate(problems, os.environ, sys.stderr)


@click.group(
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  sluice validate                       check every pipeline under pipelines/
  sluice graph churn-retrain --format mermaid
  sluice run churn-retrain -p n_estimators=200
  sluice run pipelines/nightly.yaml --json > manifest.json

Exit codes: 0 success, 1 a run failed, 2 invalid input or usage, 130 interrupted.
Docs: docs/pipeline-format.md, docs/cli.md""",
)
@click.option(
    "--repo",
    metavar="DIR",
    help="Repository root (default: the git top level of the current folder).",
)
@click.option(
    "--config", metavar="FILE", help="Settings file (default: sluice.yaml at the repository root)."
)
@click.version_option(__version__, prog_name="sluice")
@click.pass_context
def cli(ctx: click.Context, repo: str | None, config: str | None) -> None:
    """Sluice: pipelines as code; every step in its own container, every run recorded."""
    ctx.obj = State(repo, config)


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of {file, line, message} on stdout."
)
@click.pass_obj
def validate(state: State, paths: tuple[str, ...], as_json: bool) -> None:
    """Check pipeline files; print every problem as file:line: message.

    \b
    PATH is a pipeline file or a folder searched recursively for *.yaml / *.yml
    (default: the pipelines folder of sluice.yaml, else pipelines/).
    Exits 0 when every file is valid, 2 otherwise.

    \b
    Examples:
      sluice validate
      sluice validate pipelines/train.yaml --json
    """
    from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many

    repo = state.repo
    targets = [Path(p) for p in paths] or [state.pipelines_dir]
    files: list[Path] = []
    problems: list[Problem] = []
    for target in targets:
        found = find_pipeline_files(target)
        if not found:
            what = (
                "no such file or folder" if not target.exists() else "no *.yaml pipeline files here"
            )
            problems.append(Problem(display_path(target, repo), 0, what))
        files.extend(found)
    loaded = []
    try:
        loaded = load_many(files, repo)
    except PipelineInvalid as exc:
        problems.extend(exc.problems)
    problems = sorted(set(problems))
    if as_json:
        _echo_json([p.as_dict() for p in problems])
    for problem in problems:
        click.echo(str(problem), err=True)
    _annotate(problems)
    if problems:
        click.echo(
            f"sluice: {len(problems)} problem(s) in {len({p.file for p in problems})} file(s)",
            err=True,
        )
        _exit(EXIT_INVALID)
    click.echo(f"sluice: {len(loaded)} pipeline(s) valid", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot", "json"]),
    default="text",
    show_default=True,
)
@click.pass_obj
def graph(state: State, pipeline: str, fmt: str) -> None:
    """Print a pipeline's DAG by level.

    \b
    PIPELINE is a pipeline name or the path of its file.

    \b
    Examples:
      sluice graph churn-retrain
      sluice graph pipelines/churn.yaml --format mermaid
      sluice graph churn-retrain --format dot | dot -Tsvg > dag.svg
    """
    from engine.core.graph import render

    click.echo(render(state.pipeline(pipeline).dag, fmt), nl=False)


@cli.command(context_settings=CONTEXT)
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editors).

    \b
    Example:
      sluice schema > .sluice-schema.json
      # then, first line of a pipeline file:
      # yaml-language-server: $schema=../.sluice-schema.json
    """
    from engine.core.spec import Pipeline

    document = Pipeline.model_json_schema(by_alias=True, mode="validation")
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "title": "Sluice pipeline",
    }
    _echo_json(document)


def _params(
    loaded: LoadedPipeline, pairs: tuple[str, ...], params_json: str | None
) -> dict[str, Any]:
    from engine.core.parse import coerce_params

    declared = loaded.pipeline.params
    result = dict(declared)
    if params_json:
        example = "'{\"n_estimators\": 200}'"
        given = json_object(params_json, "--params-json", example=example, error=UsageError)
        result = coerce_params(declared, given, source="--params-json", from_text=False)
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p {pair!r}: use KEY=VALUE, e.g. -p n_estimators=200")
        overrides[key.strip()] = value
    texts = coerce_params(declared, overrides, source="-p", from_text=True)
    result.update({key: texts[key] for key in overrides})
    return result


def _install_signal_handlers(cancel: Any) -> None:
    count = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        count["n"] += 1
        if count["n"] >= 3:  # the user insists: stop waiting for cleanup
            os._exit(EXIT_INTERRUPTED)
        cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a param (repeatable).",
)
@click.option("--params-json", metavar="JSON", help="Override params from a JSON object.")
@click.option("--no-cache", is_flag=True, help="Run every step even when a cached result exists.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say which steps would be cached and why the others miss; run nothing.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1, 256),
    help="Steps running at once (default: CPU count).",
)
@click.option(
    "--push/--no-push", default=None, help="Push results to the remote (default: when one exists)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run manifest as JSON on stdout.")
@click.option(
    "-q", "--quiet", is_flag=True, help="Do not echo step logs (they are still recorded)."
)
@click.pass_obj
def run(
    state: State,
    pipeline: str,
    pairs: tuple[str, ...],
    params_json: str | None,
    no_cache: bool,
    dry_run: bool,
    max_parallel: int | None,
    push: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run a pipeline now: every step in its own container.

    \b
    Progress goes to stderr (a live table on a terminal, plain lines elsewhere);
    step logs are prefixed with the step name. The run is recorded on the results
    branch (runs/<pipeline>/<run-id>/: manifest.json and logs), pushed when the
    remote exists, and kept locally under .sluice/runs/<run-id>/. Steps whose
    inputs are unchanged are taken from the cache (status `cached`).
    Exits 0 when the run succeeded (or waits for approval), 1 when it failed,
    2 on invalid input, 130 when interrupted (its containers are removed first).

    \b
    Examples:
      sluice run churn-retrain
      sluice run churn-retrain -p n_estimators=200 -p min_accuracy=0.95
      sluice run churn-retrain --dry-run
      sluice run pipelines/churn.yaml --params-json '{"n_estimators": 50}' --json
    """
    from engine.core.manifest import Trigger

    loaded = state.pipeline(pipeline)
    params = _params(loaded, pairs, params_json)
    options = _options(state, loaded, params, Trigger(kind="manual"), max_parallel, push)
    options.use_cache = not no_cache
    if dry_run:
        _dry_run(state, loaded, options, as_json)
        return
    _execute(state, loaded, options, push=push, as_json=as_json, quiet=quiet)


def _options(
    state: State,
    loaded: LoadedPipeline,
    params: dict[str, Any],
    trigger: Any,
    max_parallel: int | None,
    push: bool | None,
) -> RunOptions:
    from engine.app.launch import run_options
    from engine.local.workspace import is_git_repo

    if not is_git_repo(state.repo):
        click.echo(
            f"sluice: {state.repo} is not a git repository: runs are kept under .sluice/runs only",
            err=True,
        )
    return run_options(
        state.repo,
        state.config,
        loaded,
        params=params,
        trigger=trigger,
        push=push,
        max_parallel=max_parallel,
    )


def _dry_run(state: State, loaded: LoadedPipeline, options: RunOptions, as_json: bool) -> None:
    import tempfile

    from engine.adapters.docker_runtime import DockerRuntime
    from engine.run.executor import Executor

    with tempfile.TemporaryDirectory(prefix="sluice-dry-") as scratch:
        executor = Executor(loaded, DockerRuntime(), repo=state.repo, options=options)
        verdicts = executor.explain(Path(scratch))
    if as_json:
        _echo_json([{"step": n, "cached": c, "reason": why} for n, c, why in verdicts])
        return
    width = max(len(n) for n, _, _ in verdicts)
    for name, cached, why in verdicts:
        click.echo(f"{name:<{width}}  {'cached' if cached else 'runs  '}  {why}")
    click.echo("(when conditions and approvals are decided during the run)", err=True)


def _execute(
    state: State,
    loaded: LoadedPipeline,
    options: RunOptions,
    *,
    push: bool | None,
    as_json: bool,
    quiet: bool = False,
) -> RunManifest:
    """Run with the real adapters and signal handling, then what its drift bindings start;
    exit like `sluice run` (the worst of the runs decides)."""
    from engine.adapters.console import make_reporter
    from engine.app.launch import DriftFollower, execute_following
    from engine.core.manifest import RunStatus

    follower = DriftFollower(
        state.repo, state.config, push=push, log=lambda line: click.echo(line, err=True)
    )
    manifests = execute_following(
        loaded,
        options,
        follower=follower,
        reporter=lambda: make_reporter(quiet=quiet),
        on_executor=lambda executor: _install_signal_handlers(executor.cancel),
    )
    manifest = manifests[0]
    for started in manifests[1:]:
        click.echo(
            f"sluice: {started.pipeline}: run {started.run_id} ({started.trigger.kind}) "
            f"{started.status.value}",
            err=True,
        )
    if as_json:
        click.echo(manifest.to_json())
    statuses = {m.status for m in manifests}
    if RunStatus.cancelled in statuses:
        _exit(EXIT_INTERRUPTED)
    if RunStatus.failed in statuses:
        _exit(EXIT_FAILED)
    return manifest


def _find_run(state: State, run_id: str, fetch: bool = False) -> tuple[ResultsStore, RunManifest]:
    from engine.errors import NotFound

    store = state.reading_store(fetch)
    manifest = store.manifest(run_id)
    if manifest is None:
        raise NotFound(
            f"no run {run_id!r} on the results branch",
            hint="`sluice runs` lists runs; `--fetch` gets the remote's results first",
        )
    return store, manifest


def _pipeline_for(state: State, manifest: RunManifest) -> LoadedPipeline:
    loaded = state.pipeline(manifest.pipeline)
    if loaded.sha256 != manifest.pipeline_sha256:
        click.echo(
            f"sluice: {loaded.file} changed since run {manifest.run_id}; using the current file",
            err=True,
        )
    return loaded


@cli.command(context_settings=CONTEXT)
@click.option("--pipeline", "pipeline_name", metavar="NAME", help="Only this pipeline's runs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of manifests on stdout.")
@click.pass_obj
def runs(state: State, pipeline_name: str | None, limit: int, fetch: bool, as_json: bool) -> None:
    """List recorded runs, newest first, from the results branch.

    \b
    Examples:
      sluice runs
      sluice runs --pipeline churn-retrain --limit 5
      sluice runs --fetch --json | jq '.[0].status'
    """
    store = state.reading_store(fetch)
    found = store.runs(pipeline_name, limit)
    if as_json:
        _echo_json([m.to_dict() for m in found])
        return
    if not found:
        click.echo("sluice: no runs recorded yet", err=True)
        return
    click.echo(f"{'RUN':<24} {'PIPELINE':<24} {'STATUS':<17} {'TRIGGER':<12} {'DURATION':>9}")
    for m in found:
        took = f"{m.duration_s:.1f}s" if m.duration_s is not None else ""
        click.echo(
            f"{m.run_id:<24} {m.pipeline:<24} {m.status.value:<17} {m.trigger.kind:<12} {took:>9}"
        )


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.pass_obj
def show(state: State, run_id: str, fetch: bool, as_json: bool) -> None:
    """Show one run: its steps, attempts, metrics and outputs.

    \b
    Example:
      sluice show 20261124T100000Z-a1b2c3
    """
    from engine.adapters.console import summary_lines
    from engine.run.records import History

    store, manifest = _find_run(state, run_id, fetch)
    if as_json:
        click.echo(manifest.to_json())
        return
    lines = summary_lines(manifest)
    lines.insert(
        1,
        f"  trigger {manifest.trigger.kind}, started {manifest.started_at}, commit {manifest.commit}",
    )
    production = History(store).pointer(manifest.pipeline)
    if production is not None and production.run_id == run_id:
        lines.insert(
            2, f"  production of {manifest.pipeline} ({production.action} at {production.at})"
        )
    for name, rec in manifest.steps.items():
        if rec.metrics:
            lines.append(
                f"  {name} metrics: " + ", ".join(f"{k}={v}" for k, v in rec.metrics.items())
            )
        for path, pointer in rec.outputs.items():
            lines.append(
                f"  {name} output {path}: {pointer.size} bytes sha256:{pointer.sha256[:12]}"
            )
        if rec.cached_from:
            lines.append(f"  {name} cached from {rec.cached_from}")
    click.echo("\n".join(lines))


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.argument("step")
@click.option("--attempt", type=click.IntRange(1, 1000), help="Attempt number (default: the last).")
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.pass_obj
def logs(state: State, run_id: str, step: str, attempt: int | None, fetch: bool) -> None:
    """Print a step's log from the results branch.

    \b
    Examples:
      sluice logs 20261124T100000Z-a1b2c3 train
      sluice logs 20261124T100000Z-a1b2c3 train --attempt 1
    """
    from engine.errors import NotFound

    store, manifest = _find_run(state, run_id, fetch)
    record = manifest.steps.get(step)
    if record is None:
        raise NotFound(f"run {run_id} has no step {step!r}; steps: {', '.join(manifest.steps)}")
    if not record.attempts:
        raise NotFound(f"step {step!r} of run {run_id} never ran ({record.status.value})")
    number = attempt or record.attempts[-1].number
    text = store.log(run_id, step, number)
    if text is None:
        raise NotFound(f"no log for {step} attempt {number} of run {run_id}")
    click.echo(text.decode("utf-8", "replace"), nl=False)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--max-parallel", type=click.IntRange(1, 256), help="Steps running at once.")
@click.option(
    "--push/--no-push", default=None, help="Push results to the remote (default: when one exists)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new run's manifest as JSON on stdout."
)
@click.pass_obj
def retry(
    state: State, run_id: str, max_parallel: int | None, push: bool | None, as_json: bool
) -> None:
    """Start a new run that reuses RUN_ID's succeeded steps and runs the rest.

    Works after a failure, a cancellation, or an engine that died mid-run. Reused
    outputs are re-verified (sha256) first; checkpoints of failed steps carry over.

    \b
    Example:
      sluice retry 20261124T100000Z-a1b2c3
    """
    from engine.core.manifest import Trigger

    _, original = _find_run(state, run_id)
    loaded = _pipeline_for(state, original)
    trigger = Trigger(kind="retry", event=run_id, payload={"retry_of": run_id})
    options = _options(state, loaded, dict(original.params), trigger, max_parallel, push)
    options.reuse = original
    _execute(state, loaded, options, push=push, as_json=as_json)


def _decide(
    state: State, run_id: str, decision: str, by: str | None, push: bool | None
) -> RunManifest:
    from engine.core.manifest import RunStatus

    _, paused = _find_run(state, run_id)
    if paused.status is not RunStatus.waiting_approval:
        raise UsageError(f"run {run_id} is {paused.status.value}, not waiting for approval")
    loaded = _pipeline_for(state, paused)
    options = _options(state, loaded, dict(paused.params), paused.trigger, None, push)
    options.resume = paused
    options.decision = "approve" if decision == "approve" else "reject"
    options.decided_by = by or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown"
    return _execute(state, loaded, options, push=push, as_json=False)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--by", metavar="NAME", help="Who approves (default: $GITHUB_ACTOR, else $USER).")
@click.option(
    "--push/--no-push", default=None, help="Push results to the remote (default: when one exists)."
)
@click.pass_obj
def approve(state: State, run_id: str, by: str | None, push: bool | None) -> None:
    """Approve a paused run and continue it here; finished steps are not run again.

    \b
    Example:
      sluice approve 20261124T100000Z-a1b2c3 --by alice
    """
    _decide(state, run_id, "approve", by, push)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--by", metavar="NAME", help="Who rejects (default: $GITHUB_ACTOR, else $USER).")
@click.option(
    "--push/--no-push", default=None, help="Push results to the remote (default: when one exists)."
)
@click.pass_obj
def reject(state: State, run_id: str, by: str | None, push: bool | None) -> None:
    """Reject a paused run: it ends as failed (its finally steps still run); exits 0.

    \b
    Example:
      sluice reject 20261124T100000Z-a1b2c3 --by alice
    """
    try:
        _decide(state, run_id, "reject", by, push)
    except click.exceptions.Exit as exc:
        if exc.exit_code != EXIT_FAILED:  # failed is what a rejection means
            raise
    click.echo(f"sluice: run {run_id} rejected", err=True)


@cli.command(context_settings=CONTEXT)
@click.option(
    "--all", "everything", is_flag=True, help="Remove every Sluice container, running or not."
)
def gc(everything: bool) -> None:
    """Remove containers left behind by an engine that was killed outright.

    \b
    Without --all: stopped Sluice containers, and running ones whose engine
    process (on this host) is gone.

    \b
    Example:
      sluice gc
    """
    from engine.adapters.docker_runtime import DockerRuntime

    removed = DockerRuntime().gc(everything=everything)
    for name in removed:
        click.echo(name)
    click.echo(f"sluice: removed {len(removed)} container(s)", err=True)


def _register_commands() -> None:
    """Commands that live in engine/cli/ (each imports only click at the top: cheap)."""
    from engine.cli import dispatch, drift, production, serve, tick, trigger, workflow

    for module in (trigger, tick, dispatch, serve, workflow, drift):
        cli.add_command(module.command)
    cli.add_command(production.promote)
    cli.add_command(production.rollback)


_register_commands()


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: never shows a traceback for an error the engine expects."""
    try:
        code = cli.main(args=argv, prog_name="sluice", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("sluice: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code
    except PipelineInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        _annotate(exc.problems)
        code = exc.exit_code
    except SluiceError as exc:
        click.echo(f"sluice: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("sluice: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
