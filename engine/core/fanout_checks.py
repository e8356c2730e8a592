"""Load-time rules for fan-out steps (`matrix`, `foreach`), each a problem at its own path.

The schema checks the shapes; this module checks what it cannot: names of matrix keys, a
key shadowing a param, empty lists, `${{ params.x }}` naming a list param, the instance
limit, and where `${{ matrix.x }}` may appear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.core import fanout
from engine.core.spec import ResolvedStep
from engine.core.suggest import suggest

Path_ = tuple[str | int, ...]
Add = Callable[[Path_, str], None]

FANOUT_ONLY = ("max_parallel", "fail_fast", "allow_failures")


def _key(key: object, where: Path_, params: Mapping[str, Any], add: Add) -> None:
    if not isinstance(key, str) or not fanout.KEY_RE.match(key):
        add(where, f"matrix key {key!r} must be a letter or _ followed by letters, digits, _")
    elif key in params:
        add(
            where,
            f"matrix key {key!r} shadows param {key!r}: rename one (matrix.{key} and "
            f"params.{key} would read as the same thing)",
        )


def _listed(value: Any, where: Path_, params: Mapping[str, Any], add: Add, what: str) -> None:
    if isinstance(value, list):
        if not value:
            add(where, f"{what} is empty: give at least one value")
        return
    if not isinstance(value, str):
        return  # the schema said what is wrong
    name = fanout.param_name(value)
    if name is None:
        add(where, f"{what} is a list of values, or exactly '${{{{ params.<name> }}}}'")
    elif name not in params:
        known = ", ".join(sorted(params)) or "none"
        add(
            where, f"{what} names unknown param {name!r}{suggest(name, params)} (declared: {known})"
        )
    elif not isinstance(params[name], list):
        add(where, f"{what} names param {name!r}, which is not a list (its default is not a list)")


def check_item(
    section: str, index: int, item: Mapping[str, Any], params: Mapping[str, Any], add: Add
) -> list[str] | None:
    """Problems of one step's fan-out fields; the matrix keys its templates may use (None
    for a step that does not fan out)."""
    here: Path_ = (section, index)
    fan = [k for k in ("matrix", "foreach") if k in item]
    if not fan:
        for key in FANOUT_ONLY:
            if key in item:
                add((*here, key), f"{key} is for a step with matrix or foreach")
        return None
    if section == "finally":
        add((*here, fan[0]), "finally steps cannot fan out: fan out a main step instead")
    if item.get("approval") not in (None, False):
        add(
            (*here, "approval"),
            "approval cannot be combined with matrix or foreach: put the approval on a step "
            "before or after the sweep",
        )
    matrix, foreach = item.get("matrix"), item.get("foreach")
    keys: list[str] = []
    if isinstance(matrix, dict):
        axes = {k: v for k, v in matrix.items() if k not in fanout.RESERVED}
        if not axes and not matrix.get("include"):
            add((*here, "matrix"), "matrix is empty: give at least one axis (name: [values])")
        for key, values in axes.items():
            _key(key, (*here, "matrix", key), params, add)
            _listed(values, (*here, "matrix", key), params, add, f"matrix axis {key!r}")
            keys.append(str(key))
        for part in fanout.RESERVED:
            entries = matrix.get(part)
            for n, entry in enumerate(entries if isinstance(entries, list) else ()):
                for key in entry if isinstance(entry, dict) else ():
                    where: Path_ = (*here, "matrix", part, n, key)
                    if part == "exclude" and key not in axes:
                        shown = ", ".join(map(str, axes)) or "none"
                        add(
                            where,
                            f"exclude names {key!r}, not an axis of the matrix (axes: {shown})",
                        )
                    elif key not in keys:
                        _key(key, where, params, add)
                        keys.append(str(key))
    elif foreach is not None:
        _listed(foreach, (*here, "foreach"), params, add, "foreach")
        items = foreach if isinstance(foreach, list) else []
        if items and all(isinstance(i, dict) for i in items):
            for n, entry in enumerate(items):
                for key in entry:
                    _key(key, (*here, "foreach", n, key), params, add)
                    keys += [str(key)] if key not in keys else []
        else:
            keys.append(fanout.ITEM)
    return keys


def check_expansion(step: ResolvedStep, params: Mapping[str, Any], where: Path_, add: Add) -> None:
    """A fanned-out step expanded with the params' defaults: not empty, within the limit,
    and every value `run` holds plain."""
    try:
        for instance in fanout.instances(step, params):
            fanout.instance_step(step, instance)
    except fanout.FanOutError as exc:
        add(where, str(exc))


def matrix_reference(inner: str, keys: list[str] | None) -> str | None:
    """None when `${{ inner }}` (a `matrix.` reference) is usable here, else why not."""
    name = inner.removeprefix("matrix.")
    if keys is None:
        return f"'${{{{ {inner} }}}}': matrix values exist only in a step with matrix or foreach"
    if not fanout.KEY_RE.match(name):
        return f"'${{{{ {inner} }}}}': write matrix.<key>"
    if name not in keys:
        return (
            f"'${{{{ {inner} }}}}' names no matrix key of this step{suggest(name, keys)} "
            f"(keys: {', '.join(keys)})"
        )
    return None
