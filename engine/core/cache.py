"""Step cache keys from their components, index paths, and why a key missed (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core.fingerprint import CACHE_VERSION, digest

MISSED = "not cached: "  # starts a step's reason that says why it ran instead of reusing
MAX_LISTED_FILES = 2000  # beyond this a miss says "workspace changed" without naming files


def components(
    *,
    image_id: str,
    argv: list[str] | None,
    config: Any,
    env: Mapping[str, str],
    secret_names: list[str],
    inputs: Mapping[str, Mapping[str, str]],
    workspace: Mapping[str, str],
    matrix: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a step's result depends on, each part digested.

    Secrets count by name only: rotating a token must not leak through, or bust, the key.
    `inputs` maps upstream step -> {output path: sha256}; `workspace` path -> sha256.
    `matrix`: a fan-out instance's values (a part only when there are some, so that the
    keys of other steps stay as they were).
    """
    parts = {
        "version": CACHE_VERSION,
        "image": image_id,
        "command": digest(argv),
        "config": digest(config),
        "env": digest({"env": dict(env), "secrets": sorted(secret_names)}),
        "inputs": digest({k: dict(v) for k, v in inputs.items()}),
        "workspace": digest(dict(workspace)),
    }
    if matrix:
        parts["matrix"] = digest(dict(matrix))
    return parts


def key(parts: Mapping[str, Any]) -> str:
    return digest(dict(parts))


_WORDS = {
    "version": "the engine's cache version changed",
    "image": "the image changed",
    "command": "the command changed",
    "config": "the config changed",
    "env": "the env or secrets changed",
    "inputs": "its inputs changed",
    "workspace": "workspace files changed",
    "matrix": "its matrix values changed",
}


def why_missed(
    before: Mapping[str, Any] | None,
    now: Mapping[str, Any],
    files_before: Mapping[str, str] | None = None,
    files_now: Mapping[str, str] | None = None,
) -> str:
    """Words for why `now` does not match the last run's components."""
    if before is None:
        return "it has not run before"
    changed = [_WORDS.get(name, f"{name} changed") for name in now if before.get(name) != now[name]]
    if not changed:
        return "the cached outputs are gone from the artifact store"
    if files_before is not None and files_now is not None and "workspace files changed" in changed:
        names = sorted(
            {n for n in files_now if files_before.get(n) != files_now[n]}
            | {n for n in files_before if n not in files_now}
        )
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            changed[changed.index("workspace files changed")] = f"workspace files changed ({shown})"
    return "; ".join(changed)
