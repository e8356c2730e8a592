"""Session fixtures for tests that run workflows in the emulator: GitHub's expression
evaluator (one node child), a loopback image registry, and the engine image published to it.

tests/conftest.py registers them (`pytest_plugins`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from . import api, expressions, registry


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gh_evaluator() -> Iterator[expressions.Evaluator]:
    """GitHub's expression evaluator (@actions/expressions) in one node child."""
    reason = expressions.available()
    if reason is not None:
        _unavailable(reason)
    evaluator = expressions.Evaluator.start()
    yield evaluator
    evaluator.close()


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.Registry]:
    """A real registry on 127.0.0.1:<free port>, its storage in a throwaway folder."""
    try:
        served = registry.start(tmp_path_factory.mktemp("registry"))
    except RuntimeError as exc:
        _unavailable(str(exc))
    yield served
    served.stop()


@pytest.fixture(scope="session")
def published_engine_image(image_registry: registry.Registry, engine_image: str) -> str:
    """The engine image pushed to the loopback registry: `127.0.0.1:PORT/sluice@sha256:...`,
    pinned by digest; not present under that name locally, so using it pulls it."""
    return image_registry.push(engine_image, "sluice")


@pytest.fixture(scope="session")
def gh_api() -> Iterator[api.GitHubApi]:
    """GitHub's REST API as far as the jobs ask about their run (environment approvals)."""
    served = api.GitHubApi().start()
    yield served
    served.stop()
