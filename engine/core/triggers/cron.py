"""Cron slots a tick runs, and where their claims live (pure: `now` is passed in)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from engine.core import layout

MAX_CATCHUP = 1_000  # `catchup: all` considers at most this many (the newest) slots
MAX_WINDOW = timedelta(days=366)  # as the longest duration a pipeline file may hold
CLAIM_SCHEMA = "sluice/claim/v1"
# A claim is kept this long after its slot (or a tick's window, when longer); older claims
# leave the results branch's tip, and a floor says every slot before them counts as claimed.
CLAIMS_KEPT_FOR = timedelta(days=7)
_STAMP = re.compile(r"\d{8}T\d{4}Z")

_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def due_slots(
    schedule: str,
    timezone: str,
    *,
    now: datetime,
    window: timedelta,
    catchup: Literal["latest", "all"],
    already: Callable[[datetime], bool] = lambda slot: False,
) -> list[datetime]:
    """The slots (aware UTC datetimes, oldest first) a tick at `now` should run.

    `latest`: the newest slot in (now - window, now], unless `already` says it ran; the
    missed slots before it are coalesced into it. `all`: every slot in that window that
    has not run, capped at the newest MAX_CATCHUP. A slot is credited to its own time,
    not to `now`: a tick at 04:05 with a 6h window still owes the 02:00 slot.

    The schedule is read on the wall clock of `timezone`, and daylight saving time is
    treated as Vixie/ISC cron does (crond(8): "jobs that would have run in the interval
    that has been skipped will be run immediately ... care is taken to avoid running jobs
    twice"), telling jobs apart by whether the minute or hour field starts with `*`:

    - fixed-time jobs (`30 2 * * *`): a time skipped by the spring change runs at the
      first minute after the jump (Europe/Berlin: 03:00 CEST, 01:00Z); a time that
      happens twice in autumn runs once, at its first occurrence.
    - elapsed-time jobs (`*/15 * * * *`, `0 * * * *`): slots follow real time, so the
      skipped hour has none and the repeated hour has its own.

        >>> due_slots("0 2 * * *", "UTC", now=datetime(2026, 11, 25, 4, 5, tzinfo=UTC),
        ...           window=timedelta(hours=6), catchup="latest")
        [datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.timezone.utc)]

    Raises ValueError for an invalid expression, time zone, window, mode or a naive `now`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must carry a time zone, e.g. {now.isoformat()}Z")
    if not timedelta(0) < window <= MAX_WINDOW:
        raise ValueError(f"window must be more than zero and at most 366 days, not {window}")
    if catchup not in ("latest", "all"):
        raise ValueError(f"catchup is latest or all, not {catchup!r}")
    zone = _zone(timezone)
    until = now.astimezone(UTC)
    limit = 1 if catchup == "latest" else MAX_CATCHUP
    newest = _newest(schedule, zone, after=until - window, until=until, limit=limit)
    return [slot for slot in newest if not already(slot)]


def slot_stamp(slot: datetime) -> str:
    """`20261125T0200Z`: a slot's UTC minute, sortable, safe in a path."""
    return f"{_utc(slot):%Y%m%dT%H%MZ}"


def claim_floor(names: Iterable[str]) -> str | None:
    """The newest floor among a cron-floor folder's names (untrusted: others are ignored)."""
    return max((n for n in names if _STAMP.fullmatch(n)), default=None)


def pruned_claims(
    claimed: Iterable[str], now: datetime, kept_for: timedelta = CLAIMS_KEPT_FOR
) -> tuple[list[str], str | None]:
    """(claims to remove, the floor to record): the claims of slots more than `kept_for`
    before `now`, and the stamp before which every slot counts as claimed; ([], None) when
    none is that old.

    >>> pruned_claims(["20261101T0200Z", "20261124T0200Z"], datetime(2026, 11, 25, tzinfo=UTC))
    (['20261101T0200Z'], '20261118T0000Z')
    """
    floor = slot_stamp(now - max(kept_for, CLAIMS_KEPT_FOR))
    old = sorted(n for n in claimed if _STAMP.fullmatch(n) and n < floor)
    return (old, floor) if old else ([], None)


def slot_iso(slot: datetime) -> str:
    """`2026-11-25T02:00:00Z`: a slot as a manifest's `scheduled_for`."""
    return f"{_utc(slot):%Y-%m-%dT%H:%M:%SZ}"


def slot_id(pipeline: str, slot: datetime) -> str:
    """`nightly@20261125T0200Z`: one slot of one pipeline, the unit a tick runs once."""
    return f"{_pipeline(pipeline)}@{slot_stamp(slot)}"


def claim_path(pipeline: str, slot: datetime) -> str:
    """Where the claim of a slot lives on the results branch: one file per slot."""
    return layout.cron_claim(_pipeline(pipeline), slot_stamp(slot))


def claim_record(
    pipeline: str,
    slot: datetime,
    *,
    schedule: str,
    timezone: str,
    host: str,
    pid: int,
    claimed_at: datetime,
    run_id: str | None = None,
) -> bytes:
    """The claim file's content: which slot, by whom, when, and the run that holds it (JSON)."""
    record: dict[str, object] = {
        "schema": CLAIM_SCHEMA,
        "slot": slot_id(pipeline, slot),
        "pipeline": pipeline,
        "scheduled_for": slot_iso(slot),
        "schedule": schedule,
        "timezone": timezone,
        "claimed_by": {"host": host, "pid": pid},
        "claimed_at": slot_iso(claimed_at),
    }
    if run_id is not None:
        record["run_id"] = run_id
    return json.dumps(record, indent=2).encode() + b"\n"


def _newest(
    schedule: str,
    zone: ZoneInfo,
    *,
    after: datetime,
    until: datetime,
    limit: int,
) -> list[datetime]:
    """The newest `limit` slots in (after, until], oldest first.

    croniter walks naive wall-clock times, newest first: plain calendar arithmetic, where
    its walk over zone-aware times has rules of its own (croniter 7 yields a repeated
    02:30 twice and moves a skipped one to 03:00). `_instants` then maps each wall time
    to UTC by the rules above. That mapping can reorder times by at most one offset
    change, so the walk reaches that far beyond the bounds: not at all on most days.
    """
    slack = _max_shift(zone, after, until)
    start = _wall(until, zone) + slack + timedelta(microseconds=1)  # get_prev is exclusive
    floor = _wall(after, zone) - 2 * slack
    walls, elapsed = _parse(schedule, start)
    found: set[datetime] = set()
    while True:
        try:
            wall: datetime = walls.get_prev(datetime)
        except CroniterBadDateError:  # a date that never comes (`0 0 30 2 *`)
            break
        if wall <= floor:
            break
        found.update(s for s in _instants(wall, zone, elapsed) if after < s <= until)
        if len(found) >= limit:
            oldest_kept = sorted(found)[-limit]
            if wall < _wall(oldest_kept, zone) - 2 * slack:
                break
    return sorted(found)[-limit:]


def _instants(wall: datetime, zone: ZoneInfo, elapsed: bool) -> list[datetime]:
    """The UTC instants a naive wall-clock slot stands for (see `due_slots`)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first < second:  # the clock went back: this wall time happened twice
        return [first, second] if elapsed else [first]
    # The clock jumped over this time (PEP 495: fold=0 is then the later instant).
    return [] if elapsed else [_jump(zone, second, first)]


def _jump(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first whole minute in (before, after] that uses the offset in force at `after`."""
    target = _offset(zone, after)
    low = math.floor((before - _EPOCH) / _MINUTE)  # a minute still on the old offset
    high = math.ceil((after - _EPOCH) / _MINUTE)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, _EPOCH + middle * _MINUTE) == target:
            high = middle
        else:
            low = middle
    return _EPOCH + high * _MINUTE


def _max_shift(zone: ZoneInfo, after: datetime, until: datetime) -> timedelta:
    """An upper bound on how far one UTC-offset change near (after, until] moves the clock.

    Offsets are sampled every 12 hours from a day before to a day after: a zone keeps an
    offset for months, so every offset in force is seen, and no change is larger than the
    spread of the offsets.
    """
    start, step = after - timedelta(days=1), timedelta(hours=12)
    count = math.ceil((until - after + timedelta(days=2)) / step)
    offsets = [_offset(zone, start + i * step) for i in range(count + 1)]
    return max(offsets) - min(offsets)


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    found = moment.astimezone(zone).utcoffset()
    assert found is not None  # a ZoneInfo always knows its offset
    return found


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time of `moment` in `zone`."""
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _parse(schedule: str, start: datetime) -> tuple[croniter, bool]:
    """A croniter walking from `start`, and whether the job runs on elapsed time (its minute
    or hour field starts with `*`), as cron tells jobs apart for daylight saving time."""
    fields = schedule.split() if isinstance(schedule, str) else []
    try:
        if len(fields) != 5:  # croniter would take seconds and years too
            raise ValueError("not 5 fields")
        walls = croniter(schedule, start)  # validates: one parse, not two (is_valid is a parse)
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            f"invalid cron expression {schedule!r}: use 5 fields, minute hour day month weekday"
        ) from None
    return walls, fields[0].startswith("*") or fields[1].startswith("*")


def _utc(slot: datetime) -> datetime:
    if slot.tzinfo is None or slot.utcoffset() is None:
        raise ValueError(f"a slot must carry a time zone: {slot.isoformat()}")
    return slot.astimezone(UTC)


def _pipeline(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a pipeline name: {name!r}")
    return name
