"""Where each key and value of a pipeline document sits: what messages need, without YAML.

Kept apart from engine.core.yaml_lines so that a pipeline taken from the pipeline cache does
not load the YAML parser at all (its lines are composed only when a message asks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Path_ = tuple[str | int, ...]


@dataclass
class LineMap:
    """Where each key and value of a YAML document sits (1-based lines)."""

    keys: dict[Path_, int] = field(default_factory=dict)
    values: dict[Path_, int] = field(default_factory=dict)

    def key_line(self, path: Sequence[str | int]) -> int:
        """The line of the key at `path`, else of the nearest enclosing key; else where the
        document starts (1 when unknown)."""
        path = tuple(path)
        while path:
            if path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.values.get((), 1)

    def value_line(self, path: Sequence[str | int]) -> int:
        path = tuple(path)
        return self.values.get(path) or self.key_line(path)
