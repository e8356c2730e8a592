"""Data files for drift: check a file, pick its reader (pyarrow's or the stdlib's), read it."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from engine.adapters.drift_tables import (
    DataError,
    Source,
    Table,
    csv_header,
    stdlib_csv,
    text_column,
)
from engine.errors import NotFound

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
INSTALL_HINT = "install the drift extra: pip install 'sluice[drift]' (it adds pyarrow)"


def have_pyarrow() -> bool:
    """Whether the fast reader (and Parquet) is available."""
    return importlib.util.find_spec("pyarrow") is not None


def source(label: str) -> Source:
    """Check that `label` names a readable file of a known type."""
    path = Path(label)
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise NotFound(
            f"{label}: no such file{where}", hint="check the path, or give an absolute one"
        )
    if path.is_dir():
        raise DataError(label, "is a folder, not a data file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            label,
            f"unknown file type {path.suffix or '(no extension)'!r}",
            hint="give a .csv file (with a header row), or a .parquet/.pq file",
        )
    return Source(label, path, kind)


def read_header(src: Source, *, use_pyarrow: bool) -> list[str]:
    """The file's column names, in order; refuses empty files and duplicate names."""
    if src.format == "parquet":
        names = list(_arrow(src, use_pyarrow).parquet_schema(src).names)
    else:
        names = csv_header(src)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(src.label, f"has two columns named {name!r}", hint="rename one")
        seen.add(name)
    return names


def read_table(src: Source, names: Sequence[str], *, use_pyarrow: bool) -> Table:
    """Read the columns `names` (all present in the header) of a file."""
    if src.format == "parquet" or use_pyarrow:
        arrow = _arrow(src, use_pyarrow)
        read = arrow.read_parquet if src.format == "parquet" else arrow.read_csv
        rows, raw = read(src, names)
        if rows == 0:
            raise _no_rows(src)
        return Table(src, rows, {n: arrow.column(src, n, raw[n]) for n in names})
    rows, texts = stdlib_csv(src, names)
    if rows == 0:
        raise _no_rows(src)
    return Table(src, rows, {n: text_column(src, n, texts[n]) for n in names})


def _arrow(src: Source, use_pyarrow: bool) -> ModuleType:
    """The pyarrow reader, engine.adapters.drift_arrow."""
    if not use_pyarrow:
        raise DataError(src.label, "reading Parquet files needs pyarrow", hint=INSTALL_HINT)
    from engine.adapters import drift_arrow  # lazy: pyarrow is heavy, and optional

    return drift_arrow


def _no_rows(src: Source) -> DataError:
    return DataError(src.label, "has a header but no rows", hint="there is nothing to compare")
