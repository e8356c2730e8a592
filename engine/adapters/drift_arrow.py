"""The pyarrow reader: CSV on every core, and Parquet; same rules and errors as drift_tables.

Imported only when pyarrow is installed and wanted (drift_files decides).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, import-not-found, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, import-not-found, unused-ignore]
import pyarrow.csv as pcsv  # type: ignore[import-untyped, import-not-found, unused-ignore]

from engine.adapters.drift_tables import (
    MISSING,
    NUMBER,
    Column,
    DataError,
    Source,
    check_finite,
    refuse_missing,
    stdlib_csv,
)


def read_csv(src: Source, names: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """Row count and the columns `names` of a CSV file, as pyarrow arrays."""
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
    # Reading a column straight as float64 is 1.5x as fast as text-then-cast; a sample
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
        stdlib_csv(src, names)  # raises the precise error, as the fallback reader would
        raise DataError(src.label, f"cannot be read as CSV: {failure}")
    return int(table.num_rows), {name: table.column(name) for name in names}


def _quotes_after_header(path: Path) -> bool:
    """Whether a `"` follows the first line (a quoted header alone cannot hide a line break
    in the data)."""
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b'"', data.find(b"\n") + 1) >= 0


def _numeric_in_sample(path: Path, parse: Any, convert: Any) -> set[str]:
    try:
        with pcsv.open_csv(path, parse_options=parse, convert_options=convert) as reader:
            batch = reader.read_next_batch()
    except (pa.ArrowInvalid, StopIteration):
        return set()
    return {
        name
        for name in batch.schema.names
        if as_numbers(pa.chunked_array([batch.column(name)])) is not None
    }


def parquet_schema(src: Source) -> Any:
    """The schema of a Parquet file (its column names)."""
    try:
        return pq().read_schema(src.path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(src.label, f"is not a readable Parquet file: {exc}") from None


def read_parquet(src: Source, names: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """Row count and the columns `names` of a Parquet file."""
    try:
        table = pq().read_table(src.path, columns=list(names))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(src.label, f"is not a readable Parquet file: {exc}") from None
    return int(table.num_rows), {name: table.column(name) for name in names}


def pq() -> Any:
    """pyarrow.parquet, imported when a Parquet file comes along (CSV never needs it)."""
    # lazy: CSV never needs it
    import pyarrow.parquet  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return pyarrow.parquet


def as_numbers(strings: Any) -> Any:
    """The float64 column when every present value is a number (NUMBER), else None."""
    try:
        return pc.cast(pc.utf8_trim(strings, characters=" \t"), pa.float64())
    except pa.ArrowInvalid:
        return None


def column(src: Source, name: str, data: Any) -> Column:
    """A pyarrow column (float64 from the CSV reader, or any Parquet type) as a Column."""
    kind = data.type
    if pa.types.is_dictionary(kind):
        data = data.cast(kind.value_type)
        kind = kind.value_type
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
        numbers = as_numbers(data)
    if numbers is not None:
        values = numbers.to_numpy()  # a null becomes NaN: both are missing
        if not np.isfinite(values).all():  # one pass in the usual case
            missing = np.isnan(values)
            if missing.any():
                refuse_missing(src, name, int(missing.sum()), int(np.argmax(missing)))
            check_finite(src, name, values)
        return Column(name, numbers=values)
    if data.null_count:
        first = pc.index(pc.is_null(data), True).as_py()
        refuse_missing(src, name, int(data.null_count), int(first))
    counted = pc.value_counts(data)
    counts = dict(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    )
    return Column(name, counts=counts, first_text=_first_text(data))


def _first_text(strings: Any) -> tuple[int, str]:
    offset = 0
    for chunk in strings.chunks:
        if as_numbers(chunk) is None:
            for i, value in enumerate(chunk.to_pylist()):
                if not NUMBER.fullmatch(value):
                    return offset + i, str(value)
        offset += len(chunk)
    raise AssertionError("a text column holds a value that is not a number")
