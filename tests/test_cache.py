"""core/cache.py: cache key components, the key, and why a key missed."""

from __future__ import annotations

from typing import Any

from engine.core.cache import components, key, why_missed
from engine.core.fingerprint import CACHE_VERSION, digest


def parts(**changes: Any) -> dict[str, Any]:
    given: dict[str, Any] = {
        "image_id": "sha256:aaa",
        "argv": ["sh", "-c", "train"],
        "config": {"lr": 0.1},
        "env": {"SEED": "1"},
        "secret_names": ["TOKEN", "API_KEY"],
        "inputs": {"prep": {"data.csv": "d1"}},
        "workspace": {"src/model.py": "w1"},
    }
    return components(**{**given, **changes})


def test_components_digest_each_part() -> None:
    got = parts()
    assert got == {
        "version": CACHE_VERSION,
        "image": "sha256:aaa",
        "command": digest(["sh", "-c", "train"]),
        "config": digest({"lr": 0.1}),
        "env": digest({"env": {"SEED": "1"}, "secrets": ["API_KEY", "TOKEN"]}),
        "inputs": digest({"prep": {"data.csv": "d1"}}),
        "workspace": digest({"src/model.py": "w1"}),
    }


def test_the_key_depends_on_every_part_and_on_nothing_else() -> None:
    base = key(parts())
    assert key(parts()) == base
    assert key(dict(reversed(list(parts().items())))) == base  # order of parts: irrelevant
    assert key(parts(secret_names=["API_KEY", "TOKEN"])) == base  # secrets: names, any order
    changed = [
        parts(image_id="sha256:bbb"),
        parts(argv=["sh", "-c", "train --fast"]),
        parts(argv=None),
        parts(config={"lr": 0.2}),
        parts(env={"SEED": "2"}),
        parts(secret_names=["TOKEN"]),
        parts(inputs={"prep": {"data.csv": "d2"}}),
        parts(workspace={"src/model.py": "w2"}),
        parts(workspace={}),
    ]
    keys = {key(p) for p in changed}
    assert base not in keys and len(keys) == len(changed)


def test_why_a_key_missed() -> None:
    now = parts()
    assert why_missed(None, now) == "it has not run before"
    assert why_missed(now, now) == "the cached outputs are gone from the artifact store"
    assert why_missed(parts(image_id="sha256:old"), now) == "the image changed"
    both = why_missed(parts(config={"lr": 9}, env={}), now)
    assert both == "the config changed; the env or secrets changed"
    assert why_missed({**now, "version": 0}, now) == "the engine's cache version changed"
    assert why_missed({**now, "extra": 1}, {**now, "extra": 2}) == "extra changed"


def test_a_workspace_miss_names_the_files_that_changed() -> None:
    before = {"a.py": "1", "b.py": "1", "gone.py": "1"}
    after = {"a.py": "2", "b.py": "1", "new.py": "1"}
    said = why_missed(parts(workspace=before), parts(workspace=after), before, after)
    assert said == "workspace files changed (a.py, gone.py, new.py)"
    many_before = {f"f{n}.py": "1" for n in range(8)}
    many_after = {f"f{n}.py": "2" for n in range(8)}
    said = why_missed(
        parts(workspace=many_before), parts(workspace=many_after), many_before, many_after
    )
    assert said == "workspace files changed (f0.py, f1.py, f2.py, f3.py, f4.py and 3 more)"
    # without the file lists: no names
    assert why_missed(parts(workspace=before), parts(workspace=after)) == "workspace files changed"
