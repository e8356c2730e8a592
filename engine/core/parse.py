"""Text -> validated Pipeline, every problem reported as `file:line: message`; finds pipeline files."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from engine.core import checks
from engine.core.graph import Dag
from engine.core.spec import (
    Baseline,
    BuildSpec,
    CronSchedule,
    Defaults,
    DriftSpec,
    ImageBuild,
    Pipeline,
    PushSpec,
    RepoConfig,
    ResolvedStep,
    Resources,
    ResultsConfig,
    RetryPolicy,
    Step,
    Trigger,
    WebhookSpec,
)
from engine.errors import NotFound, PipelineInvalid, Problem

MAX_FILE_BYTES = 16 * 1024**2
MAX_NODES = 1_000_000  # after alias expansion: refuses "billion laughs" documents

Path_ = tuple[str | int, ...]

_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline with everything the planner and executor need."""

    pipeline: Pipeline
    file: str  # as shown to users (relative to the repo when possible)
    sha256: str
    steps: tuple[ResolvedStep, ...]
    dag: Dag
    lines: LineMap

    @property
    def name(self) -> str:
        return self.pipeline.name

    def step(self, name: str) -> ResolvedStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise NotFound(f"pipeline {self.name!r} has no step {name!r}")


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


def _compose(text: str, file: str) -> tuple[Any, LineMap, list[Problem]]:
    try:
        node = yaml.compose(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or "invalid YAML"
        start = exc.context_mark
        if exc.context and start is not None and start.line + 1 != line:
            what += f" ({exc.context} started at line {start.line + 1})"
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


# Which model describes the mapping under a key, for "unknown key" suggestions.
_MODEL_UNDER: dict[str, type[BaseModel]] = {
    "": Pipeline,
    "steps": Step,
    "finally": Step,
    "defaults": Defaults,
    "triggers": Trigger,
    "cron": CronSchedule,
    "push": PushSpec,
    "webhook": WebhookSpec,
    "drift": DriftSpec,
    "retries": RetryPolicy,
    "resources": Resources,
    "image": ImageBuild,
    "build": BuildSpec,
    "baseline": Baseline,
    "results": ResultsConfig,
}


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close option exists, else ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _data_path(loc: Sequence[str | int], data: Any) -> Path_:
    """Keep the parts of a pydantic `loc` that index into the data (drops union tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part == "finally_" and "finally" in node:
            part = "finally"  # the field's name -> its alias, as written in the file
        fits = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if fits:
            path.append(part)
            node = node[part]
    return tuple(path)


def describe(path: Sequence[str | int], data: Any) -> str:
    """A readable location: `steps.train.timeout` (step names instead of indexes)."""
    parts: list[str] = []
    node = data
    for part in path:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if isinstance(name, str) else f"[{part}]")
            node = item
        else:
            parts.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts).replace(".[", "[") or "the file"


_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _pydantic_problems(
    exc: ValidationError, data: Any, file: str, lines: LineMap, root: type[BaseModel] = Pipeline
) -> list[Problem]:
    grouped: dict[Path_, list[ErrorDetails]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" or err["type"] == "missing":
            path = (*_data_path(loc[:-1], data), str(loc[-1]))
        else:
            path = _data_path(loc, data)
        grouped.setdefault(path, []).append(err)
    problems = []
    for path, errors in grouped.items():
        if all(e["type"] in _TYPE_WORDS for e in errors) and any(
            len(other) > len(path) and other[: len(path)] == path for other in grouped
        ):
            # A union (`image: text | {build: ...}`) whose mapping branch matched the
            # type but not the contents: the deeper errors say what is wrong.
            continue
        problems.append(_one_problem(path, errors, data, file, lines, root))
    return problems


def _one_problem(
    path: Path_,
    errors: list[ErrorDetails],
    data: Any,
    file: str,
    lines: LineMap,
    root: type[BaseModel] = Pipeline,
) -> Problem:
    first = errors[0]
    kind = first["type"]
    where = describe(path, data)
    if kind == "extra_forbidden":
        key = str(path[-1])
        parent = next((p for p in reversed(path[:-1]) if isinstance(p, str)), "")
        model = _MODEL_UNDER.get(parent) if parent else root
        hint = suggest(key, _allowed_keys(model)) if model else ""
        return Problem(
            file, lines.key_line(path), f"unknown key {key!r} in {describe(path[:-1], data)}{hint}"
        )
    if kind == "missing":
        return Problem(
            file,
            lines.key_line(path[:-1]),
            f"missing required key {str(path[-1])!r} in {describe(path[:-1], data)}",
        )
    # The key's line, not the value's: a block value starts on the line below its key.
    line = lines.key_line(path)
    custom = [e for e in errors if e["type"] in ("value_error", "assertion_error")]
    if custom:
        message = str(custom[0]["msg"]).removeprefix("Value error, ")
        return Problem(file, line, f"{where}: {message}")
    if kind == "string_pattern_mismatch":
        return Problem(
            file,
            line,
            f"{where}: invalid name {first['input']!r}: use lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters",
        )
    if kind in ("literal_error", "enum"):
        expected = first.get("ctx", {}).get("expected", "")
        return Problem(file, line, f"{where}: {first['input']!r} is not one of {expected}")
    wanted = [_TYPE_WORDS.get(e["type"]) for e in errors]
    if all(wanted):
        words = " or ".join(dict.fromkeys(w for w in wanted if w))
        got = _type_name(first["input"])
        return Problem(file, line, f"{where}: expected {words}, got {got}")
    return Problem(file, line, f"{where}: {first['msg']}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_text(text: str, file: str = "<string>") -> LoadedPipeline:
    """Parse and validate one pipeline document. Raises PipelineInvalid with every problem."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise PipelineInvalid(
            [Problem(file, line, "not valid Unicode text (a lone surrogate)")]
        ) from None
    if size > MAX_FILE_BYTES:
        raise PipelineInvalid([Problem(file, 1, f"the file is larger than {MAX_FILE_BYTES} bytes")])
    data, lines, problems = _compose(text, file)
    if data is None and problems:
        raise PipelineInvalid(problems)
    if not isinstance(data, dict):
        raise PipelineInvalid(
            [
                *problems,
                Problem(
                    file,
                    lines.key_line(()),
                    f"a pipeline file is a mapping (name, steps, ...), got {_type_name(data)}",
                ),
            ]
        )
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, data, file, lines))
    result = checks.check_pipeline(data, pipeline)
    problems.extend(
        Problem(file, lines.key_line(path), message) for path, message in result.problems
    )
    if problems or pipeline is None or result.dag is None:
        raise PipelineInvalid(problems or [Problem(file, 1, "invalid pipeline")])
    return LoadedPipeline(
        pipeline=pipeline,
        file=file,
        sha256=_sha256(text),
        steps=tuple(result.steps),
        dag=result.dag,
        lines=lines,
    )


def _read(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{display}: no such file") from None
    except OSError as exc:
        raise NotFound(f"{display}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PipelineInvalid([Problem(display, 1, f"not UTF-8 text (byte {exc.start})")]) from None


def display_path(path: Path, repo: Path | None) -> str:
    if repo is not None:
        try:
            return path.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def load_file(path: Path, repo: Path | None = None) -> LoadedPipeline:
    display = display_path(path, repo)
    return load_text(_read(path, display), display)


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
    first_by_name: dict[str, LoadedPipeline] = {}
    for item in loaded:
        other = first_by_name.setdefault(item.name, item)
        if other is not item:
            problems.append(
                Problem(
                    item.file,
                    item.lines.value_line(("name",)),
                    f"pipeline name {item.name!r} is already used by {other.file}; names must be unique",
                )
            )
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
    data, lines, problems = _compose(_read(path, display), display)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PipelineInvalid([*problems, Problem(display, 1, "sluice.yaml is a mapping")])
    try:
        result = RepoConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, data, display, lines, RepoConfig))
        raise PipelineInvalid(problems) from None
    if problems:
        raise PipelineInvalid(problems)
    return result


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


def coerce_params(
    declared: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str, from_text: bool
) -> dict[str, Any]:
    """Declared params with `overrides` applied and type-checked against the defaults' types.

    `from_text`: values are command-line strings (`-p n=3`) to be parsed into the type.
    Raises InvalidInput naming the param and the expected type.
    """
    from engine.errors import InvalidInput

    result = dict(declared)
    for key, raw in overrides.items():
        if key not in declared:
            raise InvalidInput(
                f"{source}: unknown param {key!r}{suggest(key, declared)}; "
                f"declared: {', '.join(sorted(declared)) or 'none'}"
            )
        result[key] = checks.coerce_param(
            key, declared[key], raw, from_text=from_text, source=source
        )
    return result
