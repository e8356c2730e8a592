"""Every path Sluice spells, once: on the results branch, and under `.sluice/` in the repository.

The results branch (`sluice-results`):

    runs/<pipeline>/<run id>/manifest.json           a run's manifest
    runs/<pipeline>/<run id>/logs/<step>.<n>.log      the log of attempt n of a step (a long
                                                      one's last 32 KiB: core/log_tail.py)
    runs/<pipeline>/<run id>/steps/<step>.json        jobs mode: a step job's record, until
                                                      `finish` folds it into the manifest
    cache/<key[:1]>/<key>.json                        a cached step result, by cache key
    cache/last/<pipeline>/<step>.json                 a step's last cache-key components
    index/succeeded/<pipeline>/<step>                 the last run where the step succeeded
    production/<pipeline>.json                        the production pointer
    production/<pipeline>/<seq>.json                  each production change (a claim)
    claims/cron/<pipeline>/<slot>                     a cron slot's claim (kept a week)
    claims/cron-floor/<pipeline>/<slot>               slots before the newest name count as claimed
    drift/<pipeline>/<monitor>/state.json             a drift binding's last firing
    drift/<pipeline>/<monitor>/fired/<seq>            a firing's claim
    drift/<pipeline>/<monitor>/signals/<t>-<hex>.json every drift signal that held
    archive/<pipeline>/<YYYYMM>/<newest id>.json      runs moved off the tip: id -> the pushed
                                                      commit that still holds their folders

Only the newest `results.keep_runs` runs of a pipeline (and those production names or that
are unfinished) stay under `runs/`; older ones move to the archive in batches (see
adapters/results_archive.py), and their cache entries go with them unless a run still at
the tip used them.

The repository's own `.sluice/` folder (git-ignored, never committed):

    .sluice/runs/<run id>/manifest.json               a run, recorded locally
    .sluice/runs/<run id>/logs/<step>.<n>.log         its logs (all a finished run keeps)
    .sluice/runs/<run id>/workspace.tar               the workspace snapshot, while it runs
    .sluice/runs/<run id>/steps/<step>/               outputs and checkpoints, while it runs
    .sluice/artifacts/                                the default artifact store
    .sluice/cache/pipelines/<key>.json                a validated pipeline file, keyed by its
                                                      sha256 and the engine's version (a cache)

>>> manifest("churn", "20261124T100000Z-00002a")
'runs/churn/20261124T100000Z-00002a/manifest.json'
>>> production_entry("churn", 7)
'production/churn/00000007.json'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from engine.core import names as names_check
from engine.errors import UsageError

if TYPE_CHECKING:  # the layout stays a leaf: importing it loads no models
    from engine.core.manifest import RunManifest

RUNS = "runs"
CACHE = "cache"
SUCCEEDED = "index/succeeded"
PRODUCTION = "production"
CRON_CLAIMS = "claims/cron"
CRON_FLOORS = "claims/cron-floor"
DRIFT = "drift"
ARCHIVE = "archive"
MANIFEST = "manifest.json"
LOGS = "logs"

ENGINE_DIR = ".sluice"
LOCAL_RUNS = f"{ENGINE_DIR}/{RUNS}"
DEFAULT_ARTIFACTS = f"file://{ENGINE_DIR}/artifacts"
WORKSPACE_TAR = "workspace.tar"  # in a local run's folder, while it runs
LOCAL_STEPS = "steps"  # ditto: local copies of outputs and checkpoints, per step
PIPELINE_CACHE = f"{ENGINE_DIR}/{CACHE}/pipelines"  # validated pipeline files, by digest


def parts(path: str) -> tuple[str, ...]:
    """The names along a branch path; UsageError for one git must not hold (`names.problem`,
    and no `.git` or newline).

    >>> parts("/runs/churn/")
    ('runs', 'churn')
    """
    inside = path.strip("/")
    names = tuple(inside.split("/"))
    why = names_check.problem(inside, nested=True)
    if why is None and any(p.lower() == ".git" or "\n" in p for p in names):
        why = "has a '.git' name or a newline"
    if why is not None:
        raise UsageError(f"not a valid path on the results branch: {path!r} {why}")
    return names


# -- runs ------------------------------------------------------------------------------


def pipeline_runs(pipeline: str) -> str:
    """The folder of every run of `pipeline`."""
    return f"{RUNS}/{pipeline}"


def run(pipeline: str, run_id: str) -> str:
    return f"{RUNS}/{pipeline}/{run_id}"


def manifest(pipeline: str, run_id: str) -> str:
    return f"{run(pipeline, run_id)}/{MANIFEST}"


STEP_RECORDS = "steps"


def step_records(pipeline: str, run_id: str) -> str:
    """Jobs mode: the folder where each step's job records its step (one file per step, so
    that jobs pushing at once never write the same file)."""
    return f"{run(pipeline, run_id)}/{STEP_RECORDS}"


def step_record(pipeline: str, run_id: str, step: str) -> str:
    return f"{step_records(pipeline, run_id)}/{step}.json"


def log_name(step: str, attempt: int) -> str:
    """`train.1.log`: the name of an attempt's log in its run's `logs/` folder (on the
    branch, a log longer than log_tail.TAIL_BYTES keeps its tail there and goes whole to
    the artifact store: run/branch_logs.py)."""
    return f"{step}.{attempt}.log"


def log(pipeline: str, run_id: str, name: str) -> str:
    """Log `name` (see log_name) of a run."""
    return f"{run(pipeline, run_id)}/{LOGS}/{name}"


def run_record(
    record: RunManifest, logs: Mapping[str, bytes], extra: Mapping[str, bytes | None]
) -> tuple[dict[str, bytes | None], str]:
    """(changes, commit message) that record a run: its manifest, its logs (by log_name),
    then any `extra` paths."""
    for name in logs:
        names_check.checked(name, "log name")
    pipeline, run_id = record.pipeline, record.run_id
    changes: dict[str, bytes | None] = {log(pipeline, run_id, n): t for n, t in logs.items()}
    changes[manifest(pipeline, run_id)] = record.to_json().encode() + b"\n"
    changes.update(extra)
    return changes, f"sluice: {pipeline} {run_id} {record.status}"


def step_run_record(
    record: RunManifest,
    steps: Iterable[str],
    logs: Mapping[str, bytes],
    extra: Mapping[str, bytes | None],
) -> tuple[dict[str, bytes | None], str]:
    """Jobs mode: (changes, message) that record `steps` of a run in their own files, with
    their logs and `extra` paths; the manifest is left as it is."""
    changes, _ = run_record(record, logs, extra)
    pipeline, run_id = record.pipeline, record.run_id
    del changes[manifest(pipeline, run_id)]
    for name in steps:
        data = record.steps[name].model_dump(mode="json")
        approvals = [a for a in record.approvals if a.get("step") == name]
        if approvals:  # the run's approvals of the step (an environment's reviewer)
            data["approvals"] = approvals
        changes[step_record(pipeline, run_id, name)] = json.dumps(data, indent=2).encode()
    names = ", ".join(steps)
    return changes, f"sluice: {pipeline} {run_id} {names}"


# -- cache and index ---------------------------------------------------------------------


def cache_entry(cache_key: str) -> str:
    """Index entry of a key, sharded by its first hex digit: 16 small folders, so that a
    new entry rewrites a 17-entry folder and one of ~1/16 of the entries (with 256 shards
    every record rewrote a 257-entry folder: 0.7 KiB more per run, packed).

    >>> cache_entry("ab" + "0" * 62)[:14]
    'cache/a/ab0000'
    """
    return f"{CACHE}/{cache_key[:1]}/{cache_key}.json"


def old_cache_entry(cache_key: str) -> str:
    """Where branches written before the 16 shards hold a key's entry (first two digits):
    read when cache_entry misses, deleted with it."""
    return f"{CACHE}/{cache_key[:2]}/{cache_key}.json"


def cache_last(pipeline: str, step: str) -> str:
    """The components a step had the last time it ran, to explain the next miss."""
    return f"{CACHE}/last/{pipeline}/{step}.json"


def succeeded_steps(pipeline: str) -> str:
    """The folder naming, per step, the last run of `pipeline` where it succeeded."""
    return f"{SUCCEEDED}/{pipeline}"


def succeeded(pipeline: str, step: str) -> str:
    return f"{SUCCEEDED}/{pipeline}/{step}"


# -- the archive of runs moved off the tip ---------------------------------------------


def run_month(run_id: str) -> str:
    """The archive folder of a run: `YYYYMM` of its id (ids start with their UTC start time),
    `other` for an id that does not.

    >>> run_month("20261124T100000Z-00002a"), run_month("nightly-1")
    ('202611', 'other')
    """
    head = run_id[:6]
    return head if len(head) == 6 and head.isdigit() else "other"


def archive_pipelines() -> str:
    return ARCHIVE


def archive_month(pipeline: str, month: str) -> str:
    """The archive indexes of `pipeline`'s runs of one month (see run_month)."""
    return f"{ARCHIVE}/{pipeline}/{month}"


def archive_index(pipeline: str, month: str, newest: str) -> str:
    """One batch's index, named by the newest run id it holds: a run is in the first index
    whose name sorts at or after its id (or a later one)."""
    return f"{archive_month(pipeline, month)}/{newest}.json"


# -- production -------------------------------------------------------------------------


def production(pipeline: str) -> str:
    """The production pointer of `pipeline`."""
    return f"{PRODUCTION}/{pipeline}.json"


def production_entries(pipeline: str) -> str:
    """The folder of every production change of `pipeline`."""
    return f"{PRODUCTION}/{pipeline}"


def production_entry(pipeline: str, seq: int) -> str:
    return f"{PRODUCTION}/{pipeline}/{seq:08d}.json"


# -- claims and drift -------------------------------------------------------------------


def cron_claim(pipeline: str, stamp: str) -> str:
    """The claim of one cron slot (`stamp`: the slot's `20261125T0200Z`)."""
    return f"{CRON_CLAIMS}/{pipeline}/{stamp}"


def cron_claims(pipeline: str) -> str:
    """The folder of a pipeline's cron claims (the recent ones: see cron_floors)."""
    return f"{CRON_CLAIMS}/{pipeline}"


def cron_floors(pipeline: str) -> str:
    """The folder naming how far a pipeline's old cron claims were pruned: every slot before
    the newest name (a slot stamp) counts as claimed. One file per floor, so that racing
    writers never overwrite a newer floor with an older one."""
    return f"{CRON_FLOORS}/{pipeline}"


def drift_monitors(pipeline: str) -> str:
    """The folder of the drift bindings that start `pipeline`, one per monitor."""
    return f"{DRIFT}/{pipeline}"


def drift_binding(pipeline: str, monitor: str) -> str:
    """The folder of one drift binding: `monitor`'s signals that start `pipeline`."""
    return f"{DRIFT}/{pipeline}/{monitor}"


def drift_state(pipeline: str, monitor: str) -> str:
    return f"{drift_binding(pipeline, monitor)}/state.json"


def drift_fired(pipeline: str, monitor: str, seq: int) -> str:
    return f"{drift_binding(pipeline, monitor)}/fired/{seq:08d}"


def drift_signals(pipeline: str, monitor: str) -> str:
    return f"{drift_binding(pipeline, monitor)}/signals"


def drift_signal(pipeline: str, monitor: str, stamp: str) -> str:
    """One signal's record; `stamp` (`<UTC time>-<hex>`) sorts newest last."""
    return f"{drift_signals(pipeline, monitor)}/{stamp}.json"


# -- .sluice/ ------------------------------------------------------------------------------


def local_run(run_id: str) -> str:
    """A run's folder under the repository (relative to its root)."""
    return f"{LOCAL_RUNS}/{run_id}"


def local_manifest(run_id: str) -> str:
    return f"{local_run(run_id)}/{MANIFEST}"


def pipeline_cache_entry(key: str) -> str:
    """A cached, validated pipeline file (relative to the repository's root), by its key."""
    return f"{PIPELINE_CACHE}/{key}.json"
