"""The `schedule:` of a generated workflow, derived from the pipelines' cron triggers (pure).

A scheduled workflow run is a job on a runner: a tick every 15 minutes costs 96 jobs a day
even for one nightly pipeline. The tick is derived instead:

- **each distinct schedule**, as written, when every cron trigger is read in UTC (a zone
  whose offset is always zero): a nightly pipeline ticks once a day;
- else **the times of day** any schedule can fire at, in UTC (each zone's offsets over
  the year: summer and winter time both), as few lines as group them, or one line of
  every minute and hour when that would take more than MAX_LINES lines.

Whichever costs fewer jobs a day wins (ties: the schedules as written). `sluice tick`
still decides which slots are due and claims each once, so a tick that fires when no slot
is due only costs a job; a dropped or late GitHub event is caught up by `tick --window`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

FALLBACK = "*/15 * * * *"  # what the workflow ticked before: 96 jobs a day
MAX_LINES = 4  # schedule lines a derived tick may take
_DAY = 24 * 60
_YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)  # offsets sampled over two years from here


@dataclass(frozen=True)
class Tick:
    """The workflow's `schedule:` cron lines, and what they cost."""

    crons: tuple[str, ...]
    jobs_per_day: float


def derive(schedules: Iterable[tuple[str, str]]) -> Tick | None:
    """The tick for (cron expression, time zone) pairs; None when there are none.

    >>> derive([("0 2 * * *", "UTC")])
    Tick(crons=('0 2 * * *',), jobs_per_day=1.0)
    >>> derive([("0 2 * * *", "UTC"), ("30 6 * * 1", "Europe/Berlin")]).crons
    ('0 2 * * *', '30 4,5 * * *')
    """
    pairs = sorted({(" ".join(expr.split()), zone) for expr, zone in schedules})
    if not pairs:
        return None
    offsets = {zone: _offsets(zone) for _, zone in pairs}
    union = _times_of_day(pairs, offsets)
    if all(offsets[zone] == {0} for _, zone in pairs):
        written = tuple(sorted({expr for expr, _ in pairs}))
        cost = sum(_per_day(expr) for expr in written)
        if len(written) <= MAX_LINES and cost <= union.jobs_per_day:
            return Tick(written, round(cost, 2))
    return union


def _offsets(zone: str) -> set[int]:
    """Every UTC offset (minutes) the zone takes, sampled weekly over two years."""
    tz = ZoneInfo(zone)
    found = set()
    for week in range(105):
        offset = (_YEAR_START + timedelta(weeks=week)).astimezone(tz).utcoffset()
        found.add(int(offset.total_seconds() // 60) if offset is not None else 0)
    return found


def _field(values: Sequence[object], full: int) -> list[int]:
    if all(isinstance(v, int) for v in values):
        return sorted({int(str(v)) for v in values})
    return list(range(full))  # `*` or a form the times of day cannot narrow


def _times_of_day(pairs: Sequence[tuple[str, str]], offsets: dict[str, set[int]]) -> Tick:
    """The UTC minutes of the day any schedule fires at, as cron lines."""
    minutes_of_day: set[int] = set()
    for expr, zone in pairs:
        fields, _ = croniter.expand(expr)
        for hour in _field(fields[1], 24):
            for minute in _field(fields[0], 60):
                for offset in offsets[zone]:
                    minutes_of_day.add((hour * 60 + minute - offset) % _DAY)
    hours_of: dict[int, set[int]] = {}
    for moment in minutes_of_day:
        hours_of.setdefault(moment % 60, set()).add(moment // 60)
    minutes_of: dict[tuple[int, ...], list[int]] = {}
    for minute, hours in sorted(hours_of.items()):
        minutes_of.setdefault(tuple(sorted(hours)), []).append(minute)
    if len(minutes_of) <= MAX_LINES:
        lines = sorted(f"{_list(m, 60)} {_list(h, 24)} * * *" for h, m in minutes_of.items())
        return Tick(tuple(lines), float(len(minutes_of_day)))
    all_minutes = sorted(hours_of)
    all_hours = sorted({m // 60 for m in minutes_of_day})
    line = f"{_list(all_minutes, 60)} {_list(all_hours, 24)} * * *"
    return Tick((line,), float(len(all_minutes) * len(all_hours)))


def _list(values: Sequence[int], full: int) -> str:
    """`[0, 15, 30, 45]` -> `0,15,30,45`; every value -> `*`; runs of 3+ -> `a-b`."""
    if len(values) == full:
        return "*"
    parts: list[str] = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(
            str(start)
            if start == prev
            else f"{start}-{prev}"
            if prev > start + 1
            else f"{start},{prev}"
        )
        if value is not None:
            start = prev = value
    return ",".join(parts)


def _per_day(expr: str) -> float:
    """Jobs a day one UTC cron line starts, on average (months of 30.44 days)."""
    fields, _ = croniter.expand(expr)
    per_day = len(_field(fields[0], 60)) * len(_field(fields[1], 24))
    months = 1.0 if fields[3] == ["*"] else len(_field(fields[3], 12)) / 12
    dom = None if fields[2] == ["*"] else len(_field(fields[2], 31)) / 30.44
    dow = None if fields[4] == ["*"] else len({d % 7 for d in _field(fields[4], 7)}) / 7
    if dom is not None and dow is not None:  # cron: either day field matching is enough
        share = dom + dow - dom * dow
    else:
        share = dom if dom is not None else dow if dow is not None else 1.0
    return per_day * months * share
