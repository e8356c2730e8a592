"""Cron slots with a frozen clock: due or not, late ticks, catch-up modes, DST, claims."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

import pytest

from engine.core.triggers.cron import (
    MAX_CATCHUP,
    claim_path,
    claim_record,
    due_slots,
    slot_id,
    slot_iso,
    slot_stamp,
)

BERLIN = "Europe/Berlin"
H = timedelta(hours=1)


def at(text: str) -> datetime:
    """`03-29T01:00` (2026) or a full `2026-03-29T01:00` time, in UTC."""
    full = text if text.startswith("20") else f"2026-{text}"
    return datetime.fromisoformat(full).replace(tzinfo=UTC)


def slots(
    schedule: str,
    now: str,
    window: timedelta,
    *,
    tz: str = "UTC",
    catchup: Literal["latest", "all"] = "all",
    ran: tuple[str, ...] = (),
) -> list[str]:
    done = {at(t) for t in ran}
    found = due_slots(
        schedule, tz, now=at(now), window=window, catchup=catchup, already=lambda s: s in done
    )
    assert all(s.tzinfo is UTC for s in found)
    return [f"{s:%m-%dT%H:%M}" for s in found]


# -- due, not due, already run, late ---------------------------------------------------


def test_a_slot_in_the_window_is_due() -> None:
    assert slots("0 2 * * *", "11-25T02:05", H, catchup="latest") == ["11-25T02:00"]


def test_a_slot_at_exactly_now_is_due() -> None:
    assert slots("0 2 * * *", "11-25T02:00", H, catchup="latest") == ["11-25T02:00"]


def test_nothing_is_due_between_slots() -> None:
    assert slots("0 2 * * *", "11-25T03:30", H, catchup="latest") == []
    assert slots("0 2 * * *", "11-25T01:59", H, catchup="all") == []


def test_a_slot_already_run_is_not_due_again() -> None:
    assert slots("0 2 * * *", "11-25T02:05", H, catchup="latest", ran=("11-25T02:00",)) == []


def test_a_late_tick_is_credited_to_its_slot_not_to_the_clock() -> None:
    # GitHub delivered the 02:00 schedule event two hours late.
    assert slots("0 2 * * *", "11-25T04:00", 6 * H, catchup="latest") == ["11-25T02:00"]
    assert slots("0 2 * * *", "11-25T04:05", 6 * H, catchup="all") == ["11-25T02:00"]
    # ... unless it is later than the window allows.
    assert slots("0 2 * * *", "11-25T04:05", 2 * H, catchup="latest") == []


def test_window_edges_exclude_the_start_and_include_the_end() -> None:
    assert slots("0 2 * * *", "11-25T03:00", H) == []  # slot == now - window
    assert slots("0 2 * * *", "2026-11-25T02:59:59", H) == ["11-25T02:00"]
    assert slots("0 2 * * *", "2026-11-25T01:59:59", H) == []  # the slot is in the future


def test_now_in_another_zone_is_the_same_instant() -> None:
    now = datetime(2026, 11, 25, 3, 5, tzinfo=timezone(timedelta(hours=1)))  # 02:05Z
    found = due_slots("0 2 * * *", "UTC", now=now, window=H, catchup="latest")
    assert found == [at("11-25T02:00")]


# -- catch-up ---------------------------------------------------------------------------


def test_latest_coalesces_missed_slots_into_the_newest() -> None:
    # 02:00, 03:00 and 04:00 were all missed.
    assert slots("0 * * * *", "11-25T04:10", 3 * H, catchup="latest") == ["11-25T04:00"]


def test_all_runs_every_missed_slot_oldest_first() -> None:
    assert slots("0 * * * *", "11-25T04:10", 3 * H, catchup="all") == [
        "11-25T02:00",
        "11-25T03:00",
        "11-25T04:00",
    ]


def test_catchup_modes_skip_slots_already_run() -> None:
    # latest does not fall back to an older slot once the newest one ran
    assert slots("0 * * * *", "11-25T04:10", 3 * H, catchup="latest", ran=("11-25T04:00",)) == []
    assert slots("0 * * * *", "11-25T04:10", 3 * H, ran=("11-25T03:00",)) == [
        "11-25T02:00",
        "11-25T04:00",
    ]


def test_all_is_capped_at_the_newest_slots() -> None:
    found = due_slots(
        "* * * * *", "UTC", now=at("11-25T12:00"), window=timedelta(days=366), catchup="all"
    )
    assert len(found) == MAX_CATCHUP
    assert found[-1] == at("11-25T12:00")
    assert found[0] == at("11-25T12:00") - (MAX_CATCHUP - 1) * timedelta(minutes=1)
    assert found == sorted(found)


def test_a_schedule_that_never_comes_has_no_slots() -> None:
    assert slots("0 0 30 2 *", "11-25T12:00", timedelta(days=366)) == []


def test_a_time_zone_moves_the_slot() -> None:
    assert slots("0 2 * * *", "11-25T01:05", H, tz=BERLIN) == ["11-25T01:00"]  # CET, +01:00
    assert slots("0 2 * * *", "07-01T00:05", H, tz=BERLIN) == ["07-01T00:00"]  # CEST, +02:00


# -- daylight saving time: Europe/Berlin 2026 -------------------------------------------
# Spring: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z). Autumn: 2026-10-25 03:00 CEST ->
# 02:00 CET (01:00Z), so 02:00-02:59 happens twice (00:00-00:59Z and 01:00-01:59Z).


def test_spring_forward_runs_a_skipped_fixed_time_at_the_jump() -> None:
    # 02:30 does not exist on 29 March: cron runs it at the first minute after the jump.
    assert slots("30 2 * * *", "03-31T00:00", 4 * 24 * H, tz=BERLIN) == [
        "03-27T01:30",  # 02:30 CET
        "03-28T01:30",
        "03-29T01:00",  # 03:00 CEST
        "03-30T00:30",  # 02:30 CEST
    ]
    assert slots("30 2 * * *", "03-29T01:05", H, tz=BERLIN, catchup="latest") == ["03-29T01:00"]


def test_spring_forward_gives_two_skipped_times_one_slot() -> None:
    assert slots("0,30 2 * * *", "03-29T06:00", 6 * H, tz=BERLIN) == ["03-29T01:00"]


def test_spring_forward_has_no_slot_in_the_missing_hour_for_elapsed_time_jobs() -> None:
    # Hourly: real time goes on hour by hour, local 02:00 simply does not happen.
    assert slots("0 * * * *", "03-29T03:00", 5 * H, tz=BERLIN) == [
        "03-28T23:00",  # 00:00 CET
        "03-29T00:00",  # 01:00 CET
        "03-29T01:00",  # 03:00 CEST
        "03-29T02:00",
        "03-29T03:00",
    ]
    assert slots("*/30 2 * * *", "03-29T12:00", 12 * H, tz=BERLIN) == []


def test_fall_back_runs_a_repeated_fixed_time_once() -> None:
    assert slots("30 2 * * *", "10-27T00:00", 4 * 24 * H, tz=BERLIN) == [
        "10-23T00:30",
        "10-24T00:30",
        "10-25T00:30",  # the first 02:30 (CEST); the second (01:30Z, CET) is not a slot
        "10-26T01:30",  # 02:30 CET
    ]


def test_fall_back_latest_does_not_offer_the_second_occurrence() -> None:
    # A tick after the second 02:30 finds the first one; once it ran, nothing is due.
    assert slots("30 2 * * *", "10-25T01:45", 6 * H, tz=BERLIN, catchup="latest") == ["10-25T00:30"]
    ran = ("10-25T00:30",)
    assert slots("30 2 * * *", "10-25T01:45", 6 * H, tz=BERLIN, catchup="latest", ran=ran) == []
    assert slots("30 2 * * *", "10-25T01:45", 6 * H, tz=BERLIN, ran=ran) == []


def test_fall_back_repeats_elapsed_time_jobs_in_real_time() -> None:
    assert slots("0 * * * *", "10-25T03:00", 6 * H, tz=BERLIN) == [
        "10-24T22:00",  # 00:00 CEST
        "10-24T23:00",
        "10-25T00:00",  # 02:00 CEST
        "10-25T01:00",  # 02:00 CET
        "10-25T02:00",  # 03:00 CET
        "10-25T03:00",
    ]
    assert slots("*/30 2 * * *", "10-25T03:00", 6 * H, tz=BERLIN) == [
        "10-25T00:00",
        "10-25T00:30",
        "10-25T01:00",
        "10-25T01:30",
    ]


@pytest.mark.parametrize("tz", [BERLIN, "America/New_York", "Australia/Sydney", "UTC"])
def test_a_daily_job_runs_once_on_every_local_day_of_a_year(tz: str) -> None:
    found = due_slots(
        "30 2 * * *", tz, now=at("2027-01-01T12:00"), window=timedelta(days=365), catchup="all"
    )
    local_days = {s.astimezone(ZoneInfo(tz)).date() for s in found}
    assert len(found) == len(local_days) == 365
    assert found == sorted(found)


def hourly_gaps(tz: str, months: tuple[int, ...]) -> list[timedelta]:
    """The time between the slots of `0 * * * *` in each of these months of 2026 (UTC)."""
    gaps: list[timedelta] = []
    for month in months:  # a month per call: fewer slots than the catch-up cap
        start = datetime(2026, month, 1, tzinfo=UTC)
        end = datetime(2026 + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        found = due_slots("0 * * * *", tz, now=end, window=end - start, catchup="all")
        assert start < found[0] <= start + H and end - H < found[-1] <= end
        gaps += [later - earlier for earlier, later in pairwise(found)]
    return gaps


@pytest.mark.parametrize(("tz", "months"), [(BERLIN, (3, 10)), ("America/New_York", (3, 11))])
def test_an_hourly_job_runs_every_real_hour_through_both_changes(
    tz: str, months: tuple[int, int]
) -> None:
    assert set(hourly_gaps(tz, months)) == {H}


def test_an_hourly_job_follows_half_hour_dst_shifts() -> None:
    # Lord Howe Island moves its clocks by 30 minutes (5 April and 4 October 2026):
    # local 02:00 is skipped in spring and comes only once in autumn.
    gaps = hourly_gaps("Australia/Lord_Howe", (4, 10))
    assert sorted(set(gaps)) == [H, 3 * H / 2]
    assert gaps.count(3 * H / 2) == 2


# -- invalid input ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["61 * * * *", "0 2 * *", "0 2 * * * *", "@daily", ""])
def test_an_invalid_schedule_is_refused(schedule: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        due_slots(schedule, "UTC", now=at("11-25T02:05"), window=H, catchup="latest")


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        due_slots("0 2 * * *", "Mars/Olympus", now=at("11-25T02:05"), window=H, catchup="latest")


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        due_slots("0 2 * * *", "UTC", now=datetime(2026, 11, 25, 2, 5), window=H, catchup="all")


@pytest.mark.parametrize("window", [timedelta(0), -H, timedelta(days=367)])
def test_an_absurd_window_is_refused(window: timedelta) -> None:
    with pytest.raises(ValueError, match="window"):
        due_slots("0 2 * * *", "UTC", now=at("11-25T02:05"), window=window, catchup="all")


def test_an_unknown_catchup_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="catchup"):
        due_slots("0 2 * * *", "UTC", now=at("11-25T02:05"), window=H, catchup="some")  # type: ignore[arg-type]


# -- slot names and claims --------------------------------------------------------------


def test_a_slot_is_named_by_its_utc_minute() -> None:
    slot = datetime(2026, 11, 25, 3, 0, tzinfo=timezone(timedelta(hours=1)))
    assert slot_stamp(slot) == "20261125T0200Z"
    assert slot_iso(slot) == "2026-11-25T02:00:00Z"
    assert slot_id("nightly", slot) == "nightly@20261125T0200Z"
    assert claim_path("nightly", slot) == "claims/cron/nightly/20261125T0200Z"


def test_a_claim_records_the_slot_and_the_claimer() -> None:
    record = claim_record(
        "nightly",
        at("11-25T02:00"),
        schedule="0 2 * * *",
        timezone="UTC",
        host="runner-1",
        pid=4242,
        claimed_at=at("2026-11-25T04:05:07"),
    )
    assert json.loads(record) == {
        "schema": "sluice/claim/v1",
        "slot": "nightly@20261125T0200Z",
        "pipeline": "nightly",
        "scheduled_for": "2026-11-25T02:00:00Z",
        "schedule": "0 2 * * *",
        "timezone": "UTC",
        "claimed_by": {"host": "runner-1", "pid": 4242},
        "claimed_at": "2026-11-25T04:05:07Z",
    }


def test_slot_names_refuse_naive_times_and_paths() -> None:
    with pytest.raises(ValueError, match="time zone"):
        slot_stamp(datetime(2026, 11, 25, 2, 0))
    with pytest.raises(ValueError, match="pipeline name"):
        claim_path("../x", at("11-25T02:00"))
