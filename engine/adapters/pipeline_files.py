"""Pipeline files on disk: find them, read them, hand their text to engine.core.parse.

A file inside a repository whose text validated before is taken from the repository's
pipeline cache (engine.local.pipeline_cache) when its sha256 and the engine are unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from engine.core.parse import LoadedPipeline, decode, load_text, parse_repo_config, unique_names
from engine.core.spec import RepoConfig
from engine.core.suggest import suggest
from engine.errors import NotFound, PipelineInvalid, Problem
from engine.local import pipeline_cache


def _read(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{display}: no such file") from None
    except OSError as exc:
        raise NotFound(f"{display}: cannot read: {exc.strerror}") from None
    return decode(raw, display)


def display_path(path: Path, repo: Path | None) -> str:
    """`path` as shown to users: relative to `repo` when it lies inside it."""
    if repo is not None:
        try:
            return path.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def load_file(path: Path, repo: Path | None = None) -> LoadedPipeline:
    """One pipeline file, its problems located by its path relative to `repo`; from `repo`'s
    pipeline cache when this text validated before (a file with problems is never cached)."""
    display = display_path(path, repo)
    text = _read(path, display)
    cache = pipeline_cache.for_repo(repo) if repo is not None else None
    if cache is None:
        return load_text(text, display)
    digest = hashlib.sha256(text.encode()).hexdigest()
    found = cache.get(text, digest, display)
    if found is not None:
        return found
    loaded = load_text(text, display)
    if loaded.sha256 == digest:
        cache.put(loaded)
    return loaded


def find_pipeline_files(folder: Path) -> list[Path]:
    """Every `*.yaml` / `*.yml` below `folder`, sorted, skipping hidden folders."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    found = [
        p
        for pattern in ("*.yaml", "*.yml")
        for p in folder.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def load_many(paths: Iterable[Path], repo: Path | None = None) -> list[LoadedPipeline]:
    """Load every file; raise one PipelineInvalid with all problems, duplicate names included."""
    loaded: list[LoadedPipeline] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded.append(load_file(path, repo))
        except PipelineInvalid as exc:
            problems.extend(exc.problems)
        except NotFound as exc:
            problems.append(Problem(display_path(path, repo), 0, exc.message.split(": ", 1)[-1]))
    problems.extend(unique_names(loaded))
    if problems:
        raise PipelineInvalid(problems)
    return loaded


def load_repo_config(repo: Path, config: Path | None = None) -> RepoConfig:
    """`sluice.yaml` at the repo root (or `config`); defaults when absent."""
    path = config or repo / "sluice.yaml"
    if not path.exists():
        if config is not None:
            raise NotFound(f"{config}: no such config file")
        return RepoConfig()
    display = display_path(path, repo)
    return parse_repo_config(_read(path, display), display)


def find_pipeline(
    repo: Path, folder: Path, ref: str, *, must_exist: bool = True
) -> LoadedPipeline | None:
    """A pipeline by name or by file path (absolute, or relative to the cwd or repo)."""
    for candidate in (Path(ref), repo / ref):
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return load_file(candidate, repo)
    files = find_pipeline_files(folder)
    names: list[str] = []
    for path in files:
        try:
            loaded = load_file(path, repo)
        except PipelineInvalid as exc:
            if _declares_name(path, ref):
                raise exc from None
            continue
        if loaded.name == ref:
            return loaded
        names.append(loaded.name)
    if not must_exist:
        return None
    raise NotFound(
        f"no pipeline named {ref!r} in {display_path(folder, repo)}/{suggest(ref, names)}",
        hint="give a pipeline name or the path of its file; `sluice validate` lists problems",
    )


def _declares_name(path: Path, name: str) -> bool:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return False
    return any(
        line.strip() in (f"name: {name}", f'name: "{name}"', f"name: '{name}'")
        for line in text.splitlines()
    )
