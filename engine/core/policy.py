"""Retry and backoff decisions, and how outcomes map to step statuses (pure)."""

from __future__ import annotations

from engine.core.manifest import StepStatus
from engine.core.spec import Outcome, RetryPolicy


def should_retry(policy: RetryPolicy, attempt: int, outcome: Outcome) -> bool:
    """Whether attempt number `attempt` (1-based), which ended in `outcome`, gets another try."""
    return outcome in policy.outcomes and attempt <= policy.limit


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after attempt `attempt` failed: backoff * factor^(attempt-1), capped."""
    return float(min(policy.backoff * policy.factor ** (attempt - 1), policy.max_backoff))


def final_status(outcome: Outcome) -> StepStatus:
    """A step's status once its last attempt ended (a timed-out step is `failed`)."""
    if outcome is Outcome.succeeded:
        return StepStatus.succeeded
    if outcome is Outcome.cancelled:
        return StepStatus.cancelled
    return StepStatus.failed
