"""What one run is asked to do, and with which adapters (the caller builds those)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.core.manifest import RunManifest, Trigger
from engine.local.logs import DEFAULT_LOG_CAP
from engine.ports import ArtifactStore
from engine.run.records import History


@dataclass(frozen=True)
class JobRole:
    """Jobs mode (docs/scaling.md): this process's part in a run whose steps run as separate
    GitHub jobs, sharing nothing but the results branch and the artifact store.

    - `plan` makes the run's record and settles what needs no container (cache hits, steps
      certainly skipped); it starts nothing.
    - `step` runs the one step `step`, and records only that step's file.
    - `finish` runs the `finally` steps, closes every step whose job left no record (with
      its job's result, from `results`), and settles the run; `cancelled` when the workflow was.
    """

    part: Literal["plan", "step", "finish"]
    step: str | None = None
    job: dict[str, str] | None = None  # the GitHub job recorded with the steps it runs
    results: Mapping[str, str] = field(default_factory=dict)  # finish: step -> job result
    cancelled: bool = False

    def runs(self, name: str, is_finally: bool) -> bool:
        """Whether this part runs step `name` itself."""
        if self.part == "step":
            return name == self.step
        return self.part == "finish" and is_finally


@dataclass
class RunOptions:
    params: dict[str, Any]
    trigger: Trigger = field(default_factory=Trigger)
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 2)
    secrets: Mapping[str, str] = field(default_factory=dict)  # name -> value, from the engine's env
    grace_s: float = 5.0
    log_cap: int = DEFAULT_LOG_CAP
    run_id: str | None = None
    use_cache: bool = True
    artifacts: ArtifactStore | None = None  # required: app/compose.py builds it
    history: History | None = None  # None: the run is recorded under .sluice/runs only
    reuse: RunManifest | None = None  # `sluice retry`: the run whose succeeded steps are reused
    resume: RunManifest | None = None  # `sluice approve|reject`: the paused run to continue
    decision: Literal["approve", "reject"] | None = None
    decided_by: str = ""
    ci: dict[str, Any] | None = None  # the CI run that started it (GitHub: github_ci.ci_context)
    engine_image: str | None = None  # what `image: "@engine"` means (SLUICE_ENGINE_IMAGE)
    role: JobRole | None = None  # jobs mode: this process's part of the run (None: all of it)
