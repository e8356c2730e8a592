"""The archives put into a step's container at `/`: what is known before its upstream steps
end (workspace, /sluice files: put when the container is made ahead) and what is known only
when it starts (inputs, checkpoints: often nothing, then no archive call at all)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.core.manifest import ArtifactPointer
from engine.core.spec import ResolvedStep
from engine.local import archives
from engine.local.workspace import WorkspaceSnapshot
from engine.run.prepare import Prepared


def sluice_dirs(tar: archives.TarBuilder, step: ResolvedStep) -> None:
    """The /sluice folders; the same entries in every archive, so that one extracted later
    never changes a folder's mode."""
    tar.add_dir("sluice")
    tar.add_dir("sluice/inputs")
    for dep in step.needs:
        tar.add_dir(f"sluice/inputs/{dep}")
    tar.add_dir("sluice/outputs")
    tar.add_dir("sluice/checkpoints")


def ahead_tars(
    prepared: Prepared,
    workspace: WorkspaceSnapshot,
    params: Mapping[str, Any],
    baseline_json: bytes | None,
    work: Path,
) -> list[Path]:
    """The workspace (all of it, the step's part, or none) and the /sluice files."""
    step = prepared.step
    out = work / "sluice.tar"
    with archives.TarBuilder(out) as tar:
        sluice_dirs(tar, step)
        tar.add_bytes("sluice/config.json", json.dumps(prepared.config, indent=2).encode())
        tar.add_bytes("sluice/params.json", json.dumps(params, indent=2).encode())
        if step.instance_of:  # a fan-out instance's own values
            tar.add_bytes("sluice/matrix.json", json.dumps(step.matrix, indent=2).encode())
        if baseline_json is not None:
            tar.add_bytes("sluice/baseline.json", baseline_json)
    if step.workspace is True and workspace.tar is not None:
        return [workspace.tar, out]
    if isinstance(step.workspace, list):
        return [workspace.subset_tar(step.workspace, work / "workspace.tar"), out]
    return [out]


def late_tar(
    step: ResolvedStep,
    inputs: Mapping[str, Mapping[str, ArtifactPointer]],
    checkpoints: Path,
    materialize: Callable[[str, Mapping[str, ArtifactPointer]], Path],
    out: Path,
) -> Path | None:
    """Inputs (each needed step's outputs, `materialize`d locally) and the checkpoints kept
    from an earlier attempt; None when there are neither.

    `inputs`: folder under /sluice/inputs -> outputs; a need's name, or `<group>/<instance>`
    for the instances of a fan-out group (their outputs are materialized by instance name).
    """
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    given = [key for key in inputs if inputs[key]]
    if not given and not has_checkpoints:
        return None
    with archives.TarBuilder(out) as tar:
        sluice_dirs(tar, step)
        for key in inputs:  # an instance without outputs still has its folder
            tar.add_dir(f"sluice/inputs/{key}")
        for key in given:
            local = materialize(key.rsplit("/", 1)[-1], inputs[key])
            tar.add_tree(local, f"sluice/inputs/{key}", paths=list(inputs[key]))
        if has_checkpoints:
            tar.add_tree(checkpoints, "sluice/checkpoints")
    return out
