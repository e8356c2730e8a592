"""YAML text -> plain data plus the line of every key, each problem as `file:line: message`."""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.core.lines import LineMap as LineMap  # re-exported: where it used to live
from engine.core.lines import Path_ as Path_
from engine.errors import Problem

MAX_NODES = 1_000_000  # after alias expansion: refuses "billion laughs" documents

_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Composer:
    """Builds plain data plus a LineMap from a composed YAML node tree."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = LineMap()
        self.problems: list[Problem] = []
        self._sizes: dict[int, int] = {}
        self._loader = _YamlLoader("")  # one for every scalar: making one each time is slow

    def size(self, node: yaml.Node) -> int:
        """Node count with aliases expanded, memoised per node so it stays linear."""
        key = id(node)
        if key not in self._sizes:
            self._sizes[key] = 0  # a recursive alias counts once instead of looping
            total = 1
            if isinstance(node, yaml.MappingNode):
                total += sum(self.size(k) + self.size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                total += sum(self.size(item) for item in node.value)
            self._sizes[key] = min(total, MAX_NODES + 1)
        return self._sizes[key]

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        if depth > 100:
            raise _TooDeep
        values = self.lines.values
        if path not in values:
            values[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.tag == _STR_TAG else self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            keys = self.lines.keys
            items = []
            for index, item in enumerate(node.value):
                item_path = (*path, index)
                if item_path not in keys:
                    keys[item_path] = item.start_mark.line + 1
                items.append(self.build(item, item_path, depth + 1))
            return items
        return self._mapping(node, path, depth)

    def _mapping(self, node: yaml.Node, path: Path_, depth: int) -> dict[Any, Any]:
        keys = self.lines.keys
        out: dict[Any, Any] = {}
        merged: list[tuple[int, dict[Any, Any]]] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                value = self.build(value_node, (*path, "<<"), depth + 1)
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(item, dict) for item in items):
                    self.problems.append(
                        Problem(self.file, key_line, "<< merges a mapping or a list of mappings")
                    )
                merged.extend((key_line, item) for item in items if isinstance(item, dict))
                continue
            if key_node.tag == _STR_TAG and isinstance(key_node, yaml.ScalarNode):
                key = key_node.value  # the common case, without a recursive call
            else:
                key = self.build(key_node, (*path, "<key>"), depth + 1)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.problems.append(Problem(self.file, key_line, "keys must be plain text"))
                    continue
                if isinstance(key, bool):
                    key = str(key).lower()
                elif not isinstance(key, str):
                    key = str(key)
            key_path = (*path, key)
            if key in out:
                self.problems.append(
                    Problem(
                        self.file,
                        key_line,
                        f"duplicate key {key!r} (first at line {keys[key_path]})",
                    )
                )
                continue
            keys[key_path] = key_line
            out[key] = self.build(value_node, key_path, depth + 1)
        # YAML merge keys: the mapping's own keys win, then the earlier merged mapping.
        for merge_line, item in merged:
            for k, v in item.items():
                if k not in out:
                    out[k] = v
                    keys[(*path, k)] = merge_line
        return out

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR_TAG:
            return node.value
        if node.tag == _TIMESTAMP_TAG:
            # Dates stay text: JSON (config.json, cache keys) has no dates.
            return node.value
        line = node.start_mark.line + 1
        try:
            value = self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag such as !Ref
            raise _BadScalar(line, f"YAML error: {exc.problem}") from None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise _BadScalar(line, f"YAML error: {exc}") from None
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _BadScalar(line, f"YAML error: unsupported value of tag {node.tag!r}")
        return value

    def close(self) -> None:
        self._loader.dispose()


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _TooDeep(Exception):
    pass


class _BadScalar(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_KEY_VALUE = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w-]*):\s+(\S.*)$")


def _colon_hint(text: str, line: int) -> str:
    """A plain value holding `: ` reads as a second key: say how to keep it one value."""
    lines = text.splitlines()
    found = _KEY_VALUE.match(lines[line - 1]) if 0 < line <= len(lines) else None
    if found is None or ": " not in found.group(2):
        return ": a value holding ': ' must be quoted, or written as a block scalar (key: |)"
    key = found.group(1)
    return (
        f": the value of {key} holds ': ', which YAML reads as a new key; write it as a "
        f"block scalar ({key}: |, then the value on the next lines, indented) or quote it"
    )


def compose(text: str, file: str) -> tuple[Any, LineMap, list[Problem]]:
    """The document as plain data (None when it cannot be read), its LineMap and its problems."""
    try:
        node = yaml.compose(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or "invalid YAML"
        start = exc.context_mark
        if exc.context and start is not None and start.line + 1 != line:
            what += f" ({exc.context} started at line {start.line + 1})"
        if what.startswith("mapping values are not allowed"):
            what += _colon_hint(text, line)
        return None, LineMap(), [Problem(file, line, f"YAML syntax error: {what}")]
    except yaml.reader.ReaderError as exc:
        # libyaml counts bytes, the pure-Python reader characters.
        if _YamlLoader is yaml.SafeLoader:
            line = text.count("\n", 0, exc.position) + 1
        else:
            line = text.encode()[: exc.position].count(b"\n") + 1
        what = f"unacceptable character #x{exc.character:04x}: control characters are not allowed"
        return None, LineMap(), [Problem(file, line, f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, LineMap(), [Problem(file, 1, f"YAML error: {exc}")]
    if node is None:
        return (
            None,
            LineMap(),
            [Problem(file, 1, "the file is empty: a pipeline needs name and steps")],
        )
    composer = _Composer(file)
    # Without an anchor there is no alias to expand: the document is no bigger than its text.
    if "&" in text and composer.size(node) > MAX_NODES:
        return (
            None,
            LineMap(),
            [Problem(file, 1, "the document is too large once YAML aliases are expanded")],
        )
    try:
        data = composer.build(node, ())
    except _TooDeep:
        return None, LineMap(), [Problem(file, 1, "the document nests more than 100 levels deep")]
    except _BadScalar as exc:
        return None, LineMap(), [Problem(file, exc.line, exc.message)]
    finally:
        composer.close()
    return data, composer.lines, composer.problems
