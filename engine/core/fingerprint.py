"""Canonical JSON and the sha256 digests cache keys are made of (pure)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

CACHE_VERSION = 1  # bump when what a key covers changes: every old entry then misses


def canonical(value: Any) -> bytes:
    """JSON with sorted keys, no spaces, UTF-8: equal data gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value`."""
    return hashlib.sha256(canonical(value)).hexdigest()
