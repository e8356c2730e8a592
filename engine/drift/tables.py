"""Reading CSV and Parquet files into the columns drift is computed over.

Two readers give the same columns and the same errors: pyarrow's (multi-threaded; CSV
and Parquet) when pyarrow is installed, else the stdlib csv module's (CSV only, slower).
The rules they share:

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
import importlib.util
import mmap
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import InvalidInput, NotFound

MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A"})
NUMBER = re.compile(
    r"[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)[ \t]*",
    re.IGNORECASE,
)
# Every character NUMBER can match: a quick screen before float(), which alone would also
# take underscores, other whitespace and non-ASCII digits.
_NUMBER_CHARS = b"0123456789+-.eE \tinftyaINFTYA"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
INSTALL_HINT = "install the drift extra: pip install 'sluice[drift]' (it adds pyarrow)"

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
        names = list(_parquet_schema(src, use_pyarrow).names)
    else:
        names = _csv_header(src)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(src.label, f"has two columns named {name!r}", hint="rename one")
        seen.add(name)
    return names


def read_table(src: Source, names: Sequence[str], *, use_pyarrow: bool) -> Table:
    """Read the columns `names` (all present in the header) of a file."""
    if src.format == "parquet":
        rows, raw = _arrow_parquet(src, names, use_pyarrow)
    elif use_pyarrow:
        rows, raw = _arrow_csv(src, names)
    else:
        rows, texts = _stdlib_csv(src, names)
        if rows == 0:
            raise _no_rows(src)
        return Table(src, rows, {n: _text_column(src, n, texts[n]) for n in names})
    if rows == 0:
        raise _no_rows(src)
    return Table(src, rows, {n: _arrow_column(src, n, raw[n]) for n in names})


def _no_rows(src: Source) -> DataError:
    return DataError(src.label, "has a header but no rows", hint="there is nothing to compare")


# -- stdlib csv -------------------------------------------------------------------------


def _open_csv(src: Source) -> Any:
    try:
        return src.path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(src.label, f"cannot be read: {exc.strerror or exc}") from None


def _csv_header(src: Source) -> list[str]:
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


def _stdlib_csv(src: Source, names: Sequence[str]) -> tuple[int, dict[str, list[str]]]:
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
            f"has {len(rows[row])} field(s) but the header has {width}",
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


def _text_column(src: Source, name: str, values: list[str]) -> Column:
    """The stdlib reader's column: same decisions as `_arrow_column`, in plain Python."""
    present = values if MISSING.isdisjoint(values) else [v for v in values if v not in MISSING]
    numbers = _parse_numbers(present)
    if len(present) != len(values) or (numbers is not None and np.isnan(numbers).any()):
        flags = [v in MISSING for v in values]
        if numbers is not None:  # NaN spelled another way ("NAN", "-nan") is missing too
            nan = iter(np.isnan(numbers).tolist())
            flags = [True if flag else next(nan) for flag in flags]
        _refuse_missing(src, name, sum(flags), flags.index(True))
    if numbers is not None:
        return Column(name, numbers=_finite(src, name, numbers))
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


# -- pyarrow ----------------------------------------------------------------------------


def _arrow_csv(src: Source, names: Sequence[str]) -> tuple[int, dict[str, Any]]:
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.csv as pcsv  # type: ignore[import-untyped, unused-ignore]

    # A value may hold a line break only inside quotes; allowing for that makes pyarrow
    # find row boundaries on one thread, which halves its speed. Most files quote nothing.
    parse = pcsv.ParseOptions(newlines_in_values=_quotes_after_header(src.path))

    def convert(types: dict[str, Any]) -> Any:
        return pcsv.ConvertOptions(
            column_types=types,
            include_columns=list(names),
            null_values=sorted(MISSING),
            strings_can_be_null=True,
        )

    as_text = dict.fromkeys(names, pa.string())
    # Reading a column straight as float64 is twice as fast as text-then-cast; a sample
    # says which columns to try that way, and a surprise later on means one more read.
    numeric = _numeric_in_sample(src.path, parse, convert(as_text))
    types = {name: pa.float64() if name in numeric else pa.string() for name in names}
    table, failure = None, None
    for attempt in (types, as_text) if numeric else (as_text,):
        try:
            table = pcsv.read_csv(src.path, parse_options=parse, convert_options=convert(attempt))
            break
        except pa.ArrowInvalid as exc:
            failure = exc
    if table is None:
        _stdlib_csv(src, names)  # raises the precise error, as the fallback reader would
        raise DataError(src.label, f"cannot be read as CSV: {failure}")
    return int(table.num_rows), {name: table.column(name) for name in names}


def _quotes_after_header(path: Path) -> bool:
    """Whether a `"` follows the first line (a quoted header alone cannot hide a line break
    in the data)."""
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b'"', data.find(b"\n") + 1) >= 0


def _numeric_in_sample(path: Path, parse: Any, convert: Any) -> set[str]:
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.csv as pcsv  # type: ignore[import-untyped, unused-ignore]

    try:
        with pcsv.open_csv(path, parse_options=parse, convert_options=convert) as reader:
            batch = reader.read_next_batch()
    except (pa.ArrowInvalid, StopIteration):
        return set()
    return {
        name
        for name in batch.schema.names
        if _arrow_numbers(pa.chunked_array([batch.column(name)])) is not None
    }


def _parquet_schema(src: Source, use_pyarrow: bool) -> Any:
    if not use_pyarrow:
        raise DataError(src.label, "reading Parquet files needs pyarrow", hint=INSTALL_HINT)
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        return pq.read_schema(src.path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(src.label, f"is not a readable Parquet file: {exc}") from None


def _arrow_parquet(
    src: Source, names: Sequence[str], use_pyarrow: bool
) -> tuple[int, dict[str, Any]]:
    _parquet_schema(src, use_pyarrow)
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        table = pq.read_table(src.path, columns=list(names))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(src.label, f"is not a readable Parquet file: {exc}") from None
    return int(table.num_rows), {name: table.column(name) for name in names}


def _arrow_numbers(strings: Any) -> Any:
    """The float64 column when every present value is a number (NUMBER), else None."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    try:
        return pc.cast(pc.utf8_trim(strings, characters=" \t"), pa.float64())
    except pa.ArrowInvalid:
        return None


def _arrow_column(src: Source, name: str, data: Any) -> Column:
    """A pyarrow column (float64 from the CSV reader, or any Parquet type) as a Column."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    kind = data.type
    if pa.types.is_dictionary(kind):
        data = data.cast(kind.value_type)
        kind = kind.value_type
    numbers = None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = pc.cast(data, pa.float64())
    else:
        try:
            data = pc.cast(data, pa.string())
        except pa.ArrowException:
            raise DataError(
                src.label,
                f"has type {kind}, which is neither numbers nor text",
                column=name,
                hint="leave it out with --features",
            ) from None
        numbers = _arrow_numbers(data)
    if numbers is not None:
        values = numbers.to_numpy()  # a null becomes NaN: both are missing
        if not np.isfinite(values).all():  # one pass in the usual case
            missing = np.isnan(values)
            if missing.any():
                _refuse_missing(src, name, int(missing.sum()), int(np.argmax(missing)))
            _finite(src, name, values)
        return Column(name, numbers=values)
    if data.null_count:
        first = pc.index(pc.is_null(data), True).as_py()
        _refuse_missing(src, name, int(data.null_count), int(first))
    counted = pc.value_counts(data)
    counts = dict(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    )
    return Column(name, counts=counts, first_text=_arrow_first_text(data))


def _arrow_first_text(strings: Any) -> tuple[int, str]:
    offset = 0
    for chunk in strings.chunks:
        if _arrow_numbers(chunk) is None:
            for i, value in enumerate(chunk.to_pylist()):
                if not NUMBER.fullmatch(value):
                    return offset + i, str(value)
        offset += len(chunk)
    raise AssertionError("a text column holds a value that is not a number")


# -- shared refusals ---------------------------------------------------------------------


def _refuse_missing(src: Source, name: str, count: int, first: int) -> None:
    raise DataError(
        src.where(first),
        f"{count} missing value(s) (empty, NA, NaN, null, None); the first is here",
        column=name,
        hint="fill or drop those rows, or leave the column out with --features",
    )


def _finite(src: Source, name: str, values: Floats) -> Floats:
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
