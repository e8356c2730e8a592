"""core/fingerprint.py: canonical JSON and the digests cache keys are made of."""

from __future__ import annotations

import hashlib

from engine.core.fingerprint import CACHE_VERSION, canonical, digest


def test_canonical_json_sorts_keys_drops_spaces_and_keeps_unicode() -> None:
    assert (
        canonical({"b": 1, "a": [1, "é", None, True]}) == '{"a":[1,"é",null,true],"b":1}'.encode()
    )
    assert canonical({"z": {"y": 2, "x": 1}}) == b'{"z":{"x":1,"y":2}}'
    assert canonical("x") == b'"x"'


def test_equal_data_gives_equal_digests_whatever_the_key_order() -> None:
    first = digest({"image": "sha256:1", "env": {"A": "1", "B": "2"}})
    second = digest({"env": {"B": "2", "A": "1"}, "image": "sha256:1"})
    assert first == second
    assert (
        first
        == hashlib.sha256(canonical({"env": {"A": "1", "B": "2"}, "image": "sha256:1"})).hexdigest()
    )
    assert len(first) == 64 and int(first, 16) >= 0


def test_any_difference_changes_the_digest() -> None:
    seen = {
        digest(value)
        for value in ({"a": 1}, {"a": "1"}, {"a": 1.5}, {"a": [1]}, {"b": 1}, None, [], "", 0)
    }
    assert len(seen) == 9
    assert digest(["a", "b"]) != digest(["b", "a"])  # lists keep their order


def test_the_cache_version_is_a_positive_int() -> None:
    assert isinstance(CACHE_VERSION, int) and CACHE_VERSION >= 1
