"""The exception tree: one root, drawn in engine/errors.py's docstring exactly as the code has it."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import re

import pytest

import engine
from engine import errors
from engine.core.expressions import ExpressionError
from engine.core.graph import CycleError
from engine.errors import EngineUnavailable, InvalidInput, NotFound, SluiceError
from engine.ports import RuntimeUnavailable

_ROW = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>[A-Z]\w+)\s{2,}(?P<text>.*)$")


def _drawn() -> dict[str, str | None]:
    """Class name -> the name of its parent in the docstring's tree (None for the root)."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        row = _ROW.match(line)
        if row is None or not (row["name"] == "SluiceError" or "──" in line):
            continue
        depth = len(row["indent"]) // 4 + (1 if "──" in line else 0)
        del path[depth:]
        parents[row["name"]] = path[-1] if path else None
        path.append(row["name"])
    return parents


def _coded() -> dict[str, str | None]:
    """The same, from the classes themselves, once every engine module is imported."""
    for module in pkgutil.walk_packages(engine.__path__, "engine."):
        if module.name not in ("engine.__main__",):
            importlib.import_module(module.name)
    found: dict[str, str | None] = {"SluiceError": None}
    todo = [SluiceError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            parent = next(b for b in sub.__mro__[1:] if issubclass(b, SluiceError))
            found[sub.__name__] = parent.__name__
            todo.append(sub)
    return found


def test_the_drawing_is_the_tree() -> None:
    drawn, coded = _drawn(), _coded()
    missing = sorted(set(coded) - set(drawn))
    gone = sorted(set(drawn) - set(coded))
    moved = sorted(n for n in set(drawn) & set(coded) if drawn[n] != coded[n])
    assert not missing, f"draw these in engine/errors.py's docstring: {missing}"
    assert not gone, f"the docstring draws classes that do not exist: {gone}"
    assert not moved, f"drawn under another parent than the code has: {moved}"


def test_exit_codes() -> None:
    assert SluiceError("x").exit_code == 1
    assert NotFound("x").exit_code == InvalidInput.exit_code == 2
    assert isinstance(NotFound("x"), InvalidInput)
    assert RuntimeUnavailable("x").exit_code == EngineUnavailable.exit_code == 3
    assert isinstance(RuntimeUnavailable("x"), EngineUnavailable)


def test_errors_that_were_outside_the_root_keep_their_fields() -> None:
    cycle = CycleError(["a", "b", "a"])
    assert isinstance(cycle, InvalidInput) and isinstance(cycle, ValueError)
    assert (cycle.cycle, str(cycle)) == (["a", "b", "a"], "cycle in needs: a -> b -> a")
    bad = ExpressionError("unexpected ')'", 5, "close what you opened")
    assert isinstance(bad, InvalidInput) and isinstance(bad, ValueError)
    assert (bad.message, bad.column) == ("unexpected ')'", 5)
    assert str(bad) == "unexpected ')' at column 5: close what you opened"
    copy = pickle.loads(pickle.dumps(bad))
    assert (str(copy), copy.column, copy.message) == (str(bad), 5, bad.message)


@pytest.mark.parametrize("hint", [None, "do this"])
def test_a_hint_is_its_own_line(hint: str | None) -> None:
    text = str(SluiceError("it broke", hint=hint))
    assert text == ("it broke" if hint is None else "it broke\n  hint: do this")
