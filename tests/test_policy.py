"""core/policy.py: retries, backoff and final statuses."""

from __future__ import annotations

import pytest

from engine.core.manifest import StepStatus
from engine.core.policy import backoff, final_status, should_retry
from engine.core.spec import Outcome, RetryPolicy


def test_retries_up_to_the_limit_for_the_listed_outcomes() -> None:
    policy = RetryPolicy(limit=2)
    assert [should_retry(policy, n, Outcome.failed) for n in (1, 2, 3)] == [True, True, False]
    assert should_retry(policy, 1, Outcome.timed_out)
    assert should_retry(policy, 1, Outcome.oom_killed)
    assert not should_retry(policy, 1, Outcome.error)  # not retried unless listed
    assert not should_retry(policy, 1, Outcome.succeeded)
    assert not should_retry(policy, 1, Outcome.cancelled)
    only_errors = RetryPolicy(limit=1, outcomes=[Outcome.error])
    assert should_retry(only_errors, 1, Outcome.error)
    assert not should_retry(only_errors, 1, Outcome.failed)
    assert not should_retry(RetryPolicy(), 1, Outcome.failed)  # limit 0: no retries


def test_backoff_grows_by_its_factor_up_to_the_cap() -> None:
    policy = RetryPolicy(limit=9, backoff=10, factor=2, max_backoff=300)
    assert [backoff(policy, n) for n in range(1, 7)] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0]
    assert backoff(RetryPolicy(limit=3, backoff=5, factor=1), 3) == 5.0


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.succeeded, StepStatus.succeeded),
        (Outcome.cancelled, StepStatus.cancelled),
        (Outcome.failed, StepStatus.failed),
        (Outcome.timed_out, StepStatus.failed),
        (Outcome.oom_killed, StepStatus.failed),
        (Outcome.error, StepStatus.failed),
    ],
)
def test_final_status_of_each_outcome(outcome: Outcome, status: StepStatus) -> None:
    assert final_status(outcome) is status


def test_every_outcome_has_a_final_status() -> None:
    assert {final_status(o) for o in Outcome} == {
        StepStatus.succeeded,
        StepStatus.cancelled,
        StepStatus.failed,
    }
