"""The GitHub runner's edges: event payloads and changed files in; outputs, summaries, annotations out."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine.adapters.github_ci import manifest_url, run_url
from engine.core import cache, step_rows
from engine.core.graph import Dag
from engine.core.manifest import RunManifest, StepRecord
from engine.core.printable import printable
from engine.errors import (
    EngineUnavailable,
    InvalidInput,
    NotFound,
    Problem,
    UsageError,
    json_object,
)
from engine.local import gitcli

MAX_EVENT_BYTES = 25 * 1024**2  # GitHub caps webhook payloads at 25 MB
_SHA = re.compile(r"^[0-9a-fA-F]{4,64}$")
_ZERO = re.compile(r"^0+$")
_GIT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Event:
    """A GitHub event: its name (`push`, ...) and its JSON payload."""

    name: str
    payload: dict[str, Any]


def in_actions(env: Mapping[str, str]) -> bool:
    """Whether we run inside a GitHub Actions job (workflow commands are understood)."""
    return env.get("GITHUB_ACTIONS") == "true"


def read_event(
    env: Mapping[str, str], *, name: str | None = None, path: str | None = None
) -> Event:
    """The event named by `name`/`path`, else by GITHUB_EVENT_NAME / GITHUB_EVENT_PATH."""
    name = name or env.get("GITHUB_EVENT_NAME")
    where = path or env.get("GITHUB_EVENT_PATH")
    if not name or not where:
        missing = "--event-name" if not name else "--event-path"
        raise UsageError(
            f"no GitHub event: give {missing} (GITHUB_EVENT_NAME and GITHUB_EVENT_PATH "
            "are set only inside a GitHub Actions job)"
        )
    file = Path(where)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_EVENT_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"event payload {where}: no such file") from None
    except OSError as exc:
        raise NotFound(f"event payload {where}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidInput(f"event payload {where} is larger than {MAX_EVENT_BYTES} bytes")
    what = f"event payload {where}"
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads(bytes)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    return Event(name, json_object(text, what, example='{"ref": "refs/heads/main", ...}'))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return gitcli.run(repo, *args, timeout=_GIT_TIMEOUT_S)
    except EngineUnavailable:
        return None


def _has_commit(repo: Path, sha: str) -> bool:
    done = _git(repo, "cat-file", "-e", f"{sha}^{{commit}}")
    return done is not None and done.returncode == 0


def _fetch_commits(repo: Path, shas: Sequence[str]) -> bool:
    """Fetch commits by id from `origin`, each alone (`--depth=1`); whether all came.

    Under GitHub Actions (a throwaway clone), trees only (`--filter=blob:none`): a name diff
    needs no file contents. Elsewhere the filter is not asked for, since it would make the
    user's clone a partial one (git records `origin` as a promisor in .git/config).
    """
    if not all(len(sha) in (40, 64) for sha in shas):
        return False  # an abbreviated id cannot be asked for
    partial = ["--filter=blob:none"] if os.environ.get("GITHUB_ACTIONS") == "true" else []
    done = _git(
        repo, "fetch", "--quiet", "--depth=1", "--no-tags", "--no-write-fetch-head",
        "--no-recurse-submodules", *partial, "origin", *(sha.lower() for sha in shas),
    )  # fmt: skip
    return done is not None and done.returncode == 0 and all(_has_commit(repo, s) for s in shas)


def changed_files(repo: Path, before: object, after: object) -> list[str] | None:
    """Paths changed from `before` to `after` (`git diff --name-only`), sorted.

    A commit the clone lacks (a depth-1 checkout has `after` only) is fetched from `origin`,
    that one commit (see _fetch_commits). None when git cannot say, and the caller should
    fall back to the event's commit list: `before` missing or all zeros (a new branch), a
    commit that cannot be fetched, git itself missing or refusing the repository. Renames
    list both paths, so a pipeline watching the old location runs too.
    """
    shas = (before, after)
    if not all(isinstance(s, str) and _SHA.match(s) and not _ZERO.match(s) for s in shas):
        return None  # also keeps untrusted text from ever being read as a git option
    old, new = str(before), str(after)
    missing = [sha for sha in (old, new) if not _has_commit(repo, sha)]
    if missing and not _fetch_commits(repo, missing):
        return None
    done = _git(repo, "diff", "--name-only", "--no-renames", "-z", old, new, "--")
    if done is None or done.returncode != 0:
        return None
    names = done.stdout.decode("utf-8", "surrogateescape").split("\0")
    return sorted(name for name in names if name)


# --- outputs and summaries --------------------------------------------------------------


def output_text(outputs: Mapping[str, str]) -> str:
    """GITHUB_OUTPUT lines: `name=value`, or the heredoc form for values with line breaks."""
    lines = []
    for name, value in outputs.items():
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            while delimiter in value:  # a value must not be able to end the block early
                delimiter = f"ghadelimiter_{uuid.uuid4()}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}")
        else:
            lines.append(f"{name}={value}")
    return "".join(line + "\n" for line in lines)


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """Append step outputs to the GITHUB_OUTPUT file (other steps' lines stay)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(output_text(outputs))


def append_summary(path: Path, markdown: str) -> None:
    """Append markdown to the GITHUB_STEP_SUMMARY file, ending in a blank line so that what
    follows (another command's summary) starts a new block instead of extending a table."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown.rstrip("\n") + "\n\n")


_ICONS = {
    "succeeded": "✅",
    "cached": "💾",
    "failed": "❌",
    "upstream_failed": "⛔",
    "skipped": "⏭️",
    "waiting_approval": "⏸️",
    "cancelled": "🚫",
    "running": "⏳",
    "pending": "⏳",
}


# Every character that can start inline markdown or HTML (a link, an image, emphasis, a code
# span, an entity, a mention, math); a table cell also ends at `|`. Escaped with a
# backslash, each is text (CommonMark: any ASCII punctuation may be escaped).
_MARKDOWN = re.compile(r"[\\`*_{}\[\]()<>!|~&$@#]")


def _cell(value: object) -> str:
    """Untrusted text (names, metric keys, reasons) as plain text in markdown, also inside
    a table cell: one line, control characters escaped, markdown shown as typed."""
    return _MARKDOWN.sub(lambda m: "\\" + m.group(), printable(str(value)))


def _code(value: object, *, table: bool = True) -> str:
    """Untrusted text as one code span (shown as typed: no link, no HTML, no entity): a
    fence longer than any run of backticks inside, padded when the text starts or ends
    with one; `|` escaped in a `table` cell (GFM reads that escape inside code spans too)."""
    text = printable(str(value))
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    spaced = text.startswith(" ") and text.endswith(" ") and text.strip()
    pad = " " if text[0] == "`" or text[-1] == "`" or spaced else ""
    if table:
        text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def _status(value: str) -> str:
    return f"{_ICONS.get(value, '')} {value}".strip()


def _took(record: StepRecord) -> str:
    if not record.attempts:
        return ""
    return f"{sum(a.duration_s or 0.0 for a in record.attempts):.1f}s"


def _step_rows(manifest: RunManifest) -> list[str]:
    """A row per step; a fanned-out step's instances beneath it, by their values (a large
    sweep: those that did not end well, and a row counting the rest)."""
    found = []
    for row in step_rows.rows(manifest.steps):
        record, indent = row.record, "&emsp;↳ " if row.depth else ""
        if record is None:
            found.append(f"| &emsp;{_cell(step_rows.rest_text(row))} | | | | |")
            continue
        note = _cell(record.reason) if row.is_group and record.reason else _note(record)
        tries = "" if row.is_group else str(len(record.attempts))  # a group runs nothing
        found.append(
            f"| {indent}{_cell(row.shown)} | {_status(record.status.value)} "
            f"| {tries} | {_took(record)} | {note} |"
        )
    return found


def _metric_rows(manifest: RunManifest, baseline: RunManifest | None) -> list[str]:
    rows = []
    for name in step_rows.shown_names(manifest.steps):
        record = manifest.steps[name]
        before = baseline.steps[name].metrics if baseline and name in baseline.steps else {}
        for key in [*record.metrics, *(k for k in before if k not in record.metrics)]:
            now = record.metrics.get(key, "")
            cells = [_cell(name), _code(key), _cell(now)]
            if baseline is not None:
                cells.append(_cell(before.get(key, "")))
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _note(record: StepRecord) -> str:
    """Where a cached step came from; why a step did not run or failed (a false `when`...),
    or why it ran (`not cached: workspace files changed (...)`)."""
    if record.cached_from:
        return f"cached from {_code(record.cached_from)}"
    if not record.reason or record.status.value in ("running", "pending"):
        return ""
    if record.status.value == "succeeded" and not record.reason.startswith(cache.MISSED):
        return ""  # e.g. an approval's "waits for", left from before it ran
    return _cell(record.reason)


def _links(manifest: RunManifest, results_branch: str) -> str:
    """` · [manifest](…) · [CI run](…)`: links built only from checked parts (github_ci)."""
    found = [
        ("manifest", manifest_url(manifest.ci, results_branch, manifest.pipeline, manifest.run_id)),
        ("CI run", run_url(manifest.ci)),
    ]
    return "".join(f" · [{label}](<{url}>)" for label, url in found if url)


def run_summary(
    manifest: RunManifest,
    dag: Dag | None,
    baseline: RunManifest | None,
    results_branch: str = "sluice-results",
) -> str:
    """One run as markdown: a steps table, the DAG coloured by status, metrics vs baseline;
    links to its manifest on the results branch and its CI run, when `ci` names them."""
    took = f" · {manifest.duration_s:.1f}s" if manifest.duration_s is not None else ""
    lines = [
        f"### {_status(manifest.status.value)}: {_cell(manifest.pipeline)}",
        "",
        f"Run {_code(manifest.run_id, table=False)} · trigger "
        f"{_code(manifest.trigger.kind, table=False)}{took}{_links(manifest, results_branch)}",
        "",
    ]
    if manifest.error:
        lines += [f"> **Error:** {_cell(manifest.error)}", ""]
    lines += [
        "| Step | Status | Attempts | Duration | Note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    lines += _step_rows(manifest)
    warned = [(name, text) for name, record in manifest.steps.items() for text in record.warnings]
    if warned:
        lines += ["", "**Warnings**", ""]
        lines += [f"- ⚠️ {_cell(name)}: {_cell(text)}" for name, text in warned]
    if dag is not None:
        lines += ["", "```mermaid", step_rows.mermaid(manifest.steps, dag), "```"]
    rows = _metric_rows(manifest, baseline)
    if rows:
        header = "| Step | Metric | Value |"
        rule = "| --- | --- | ---: |"
        if baseline is not None:
            header += f" Baseline {_code(baseline.run_id)} |"
            rule += " ---: |"
        lines += ["", "**Metrics**", "", header, rule, *rows]
    return "\n".join(lines) + "\n"


def summary(
    manifests: Sequence[RunManifest],
    dags: Mapping[str, Dag],
    baselines: Mapping[str, RunManifest],
    *,
    heading: str = "Sluice",
    nothing: str = "nothing to run",
    results_branch: str = "sluice-results",
) -> str:
    """The job summary for several runs; `dags` by pipeline, `baselines` by run id."""
    if not manifests:
        return f"## {heading}\n\n{_cell(nothing)}\n"
    parts = [f"## {heading}: {len(manifests)} run{'s' if len(manifests) != 1 else ''}\n"]
    for manifest in manifests:
        baseline = baselines.get(manifest.baseline_run) if manifest.baseline_run else None
        dag = dags.get(manifest.pipeline)
        parts.append(run_summary(manifest, dag, baseline, results_branch))
    return "\n".join(parts)


def problems_summary(problems: Sequence[Problem]) -> str:
    """Invalid pipeline files as a markdown table, for a job that ran nothing because of them."""
    rows = [f"| {_code(p.file)} | {p.line or ''} | {_cell(p.message)} |" for p in problems]
    table = ["| File | Line | Problem |", "| --- | ---: | --- |", *rows]
    return "## Sluice: invalid pipelines, nothing was run\n\n" + "\n".join(table) + "\n"


# --- workflow commands ------------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


STORE_WARNING = "> **Sluice warning:** "  # a job-summary line that summarises no run
escape_data = _escape_data  # a workflow command's message
markdown_text = _cell  # untrusted text as plain markdown text


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(problem: Problem, level: str = "error") -> str:
    """`::error file=F,line=L::message`: shows the problem on the file in the pull request."""
    where = f"file={_escape_property(problem.file)},line={problem.line or 1}"
    return f"::{level} {where}::{_escape_data(problem.message)}"


def run_error(
    manifest: RunManifest, env: Mapping[str, str], stream: IO[str], *, summary: bool = True
) -> None:
    """A run the engine could not finish (its record not pushed, Docker gone): an
    `::error title=...::why` annotation inside GitHub Actions, and with `summary` a line in
    the job summary when GITHUB_STEP_SUMMARY is set."""
    title = f"Sluice: {manifest.pipeline} run {manifest.run_id}"
    why = manifest.error or "the engine could not finish the run"
    if in_actions(env):
        stream.write(f"::error title={_escape_property(title)}::{_escape_data(why)}\n")
        stream.flush()
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary and summary_path:
        append_summary(Path(summary_path), f"> **Sluice error:** {_cell(title)}: {_cell(why)}")


def annotate(
    problems: Sequence[Problem], env: Mapping[str, str], stream: IO[str], level: str = "error"
) -> None:
    """Write one annotation per problem, inside GitHub Actions only (elsewhere it is noise)."""
    if not in_actions(env):
        return
    for problem in problems:
        stream.write(annotation(problem, level) + "\n")
    stream.flush()


@contextlib.contextmanager
def group(title: str, env: Mapping[str, str], stream: IO[str]) -> Iterator[None]:
    """Fold what is printed inside into one collapsible log group (in GitHub Actions)."""
    if not in_actions(env):
        yield
        return
    stream.write(f"::group::{_escape_data(title)}\n")
    stream.flush()
    try:
        yield
    finally:
        stream.write("::endgroup::\n")
        stream.flush()
