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
