"""The columns drift is computed over, the rules every reader keeps, and the stdlib CSV reader.

Two readers give the same columns and the same errors: pyarrow's (drift_arrow;
multi-threaded; CSV and Parquet) when pyarrow is installed, else the stdlib csv module's
(here; CSV only, slower); drift_files picks one. The rules they share:

- A CSV file is UTF-8 with a header row; blank lines are skipped; every row has as many
  fields as the header.
- A cell is missing when it is exactly one of MISSING, or a number that reads as NaN.
- A value is a number when it matches NUMBER: decimal digits with an optional sign,
  point and exponent, or inf/infinity/nan in any case, with spaces or tabs around it
  (exactly what pyarrow's float parser accepts, so both readers agree). A column is
  numeric in a file when every present value is a number; else it holds text.
- Parquet columns of integer, floating or decimal type are numeric; booleans become the
  text `true`/`false`; strings follow the text rule above.

Missing values and infinite numbers are refused with the file, line (Parquet: row) and
column; so is everything else that would make the comparison meaningless.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.core.suggest import counted
from engine.errors import InvalidInput

MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A"})
NUMBER = re.compile(
    r"[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)[ \t]*",
    re.IGNORECASE,
)
# Every character NUMBER can match: a quick screen before float(), which alone would also
# take underscores, other whitespace and non-ASCII digits.
_NUMBER_CHARS = b"0123456789+-.eE \tinftyaINFTYA"

Floats = NDArray[np.float64]


class DataError(InvalidInput):
    """A data file that cannot be compared; names the file, line or row, and column."""

    def __init__(
        self, where: str, message: str, *, column: str | None = None, hint: str | None = None
    ) -> None:
        self.where = where
        self.column = column
        text = f"column {column!r}: {message}" if column is not None else message
        super().__init__(f"{where}: {text}", hint=hint)


@dataclass(frozen=True)
class Source:
    """A data file as the user named it."""

    label: str
    path: Path
    format: str  # csv | parquet

    def where(self, row: int) -> str:
        """Where data row `row` (0-based) is: `file.csv:57` (the line it starts on) or
        `file.parquet row 57` (1-based)."""
        if self.format == "parquet":
            return f"{self.label} row {row + 1}"
        line = _csv_line(self.path, row)
        return f"{self.label}:{line}" if line else f"{self.label} row {row + 1}"


@dataclass(frozen=True)
class Column:
    """One column of one file: numbers when every value is a number, else value counts."""

    name: str
    numbers: Floats | None = None  # finite, none missing
    counts: dict[str, int] | None = None  # text value -> count
    first_text: tuple[int, str] | None = None  # (row, value): the first value not a number


@dataclass(frozen=True)
class Table:
    """The columns read from one file (only those asked for), and its row count."""

    source: Source
    rows: int
    columns: dict[str, Column] = field(default_factory=dict)


# -- stdlib csv -------------------------------------------------------------------------


def _open_csv(src: Source) -> Any:
    try:
        return src.path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(src.label, f"cannot be read: {exc.strerror or exc}") from None


def csv_header(src: Source) -> list[str]:
    with _open_csv(src) as handle:
        reader = csv.reader(handle)
        try:
            header = next((record for record in reader if record), None)
        except UnicodeDecodeError:
            raise _not_utf8(src) from None
        except csv.Error as exc:
            raise DataError(f"{src.label}:{reader.line_num}", f"is not valid CSV: {exc}") from None
    if header is None:
        raise DataError(
            src.label, "is empty: no header row", hint="a CSV file starts with a row of names"
        )
    return header


def _not_utf8(src: Source) -> DataError:
    return DataError(src.label, "is not UTF-8 text", hint="save it as UTF-8 CSV")


def stdlib_csv(src: Source, names: Sequence[str]) -> tuple[int, dict[str, list[str]]]:
    """Row count and the columns `names` of a CSV file, as text, read with the csv module."""
    with _open_csv(src) as handle:
        reader = csv.reader(handle)
        try:
            header = next(record for record in reader if record)
            rows = [record for record in reader if record]
        except UnicodeDecodeError:
            raise _not_utf8(src) from None
        except csv.Error as exc:
            raise DataError(f"{src.label}:{reader.line_num}", f"is not valid CSV: {exc}") from None
    width = len(header)
    if set(map(len, rows)) - {width}:
        row = next(i for i, record in enumerate(rows) if len(record) != width)
        raise DataError(
            src.where(row),
            f"has {counted(len(rows[row]), 'field')} but the header has {width}",
            hint="quote values that contain commas",
        )
    index = {name: header.index(name) for name in names}
    return len(rows), {name: [record[j] for record in rows] for name, j in index.items()}


def _csv_line(path: Path, row: int) -> int:
    """The line data row `row` starts on (quoted values may span lines); 0 if not found."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        start, index = 1, -2  # -2: the header comes first
        for record in reader:
            if record:
                index += 1
                if index == row:
                    return start
            start = reader.line_num + 1
    return 0


def text_column(src: Source, name: str, values: list[str]) -> Column:
    """The stdlib reader's column: same decisions as `drift_arrow.column`, in plain Python."""
    present = values if MISSING.isdisjoint(values) else [v for v in values if v not in MISSING]
    numbers = _parse_numbers(present)
    if len(present) != len(values) or (numbers is not None and np.isnan(numbers).any()):
        flags = [v in MISSING for v in values]
        if numbers is not None:  # NaN spelled another way ("NAN", "-nan") is missing too
            nan = iter(np.isnan(numbers).tolist())
            flags = [True if flag else next(nan) for flag in flags]
        refuse_missing(src, name, sum(flags), flags.index(True))
    if numbers is not None:
        return Column(name, numbers=check_finite(src, name, numbers))
    first = next((i, v) for i, v in enumerate(values) if not NUMBER.fullmatch(v))
    return Column(name, counts=dict(Counter(values)), first_text=first)


def _parse_numbers(values: list[str]) -> Floats | None:
    try:
        text = "".join(values).encode("ascii")
    except UnicodeEncodeError:
        return None
    if text.translate(None, _NUMBER_CHARS):  # something is left: not only number characters
        return None
    try:
        return np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:
        return None


# -- shared refusals ---------------------------------------------------------------------


def refuse_missing(src: Source, name: str, count: int, first: int) -> None:
    raise DataError(
        src.where(first),
        f"{counted(count, 'missing value')} (empty, NA, NaN, null, None); the first is here",
        column=name,
        hint="fill or drop those rows, or leave the column out with --features",
    )


def check_finite(src: Source, name: str, values: Floats) -> Floats:
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise DataError(
            src.where(row),
            f"{values[row]} is not a finite number",
            column=name,
            hint="drop or clip such values, or leave the column out with --features",
        )
    return values
