"""Deciding when to refresh a token and when to retry a failure.

Pure arithmetic over instants and durations: no I/O, no clock of its own, and
randomness only through the ``rng`` argument, so every rule here is tested with
fixed inputs. ``reconcile`` calls it with the wall clock; the README's
"Refresh timing" section describes the same rules in words.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta

from tokenkeeper.endpoint import Retry

DELIVERY_LEAD = timedelta(seconds=120)
"""What kubelet may need to deliver a changed Secret to a mounted volume."""

MIN_USE_FRACTION = 0.1
"""A token is used for at least this share of its lifetime before a refresh."""

MAX_JITTER = timedelta(seconds=5)
JITTER_FRACTION = 0.05
"""Refreshes come up to 5 % of the lead time (at most 5 s) early, never late."""

_BACKOFF = {
    Retry.TRANSIENT: (timedelta(seconds=1), timedelta(minutes=5)),
    Retry.CREDENTIAL: (timedelta(seconds=30), timedelta(minutes=10)),
    Retry.LOCAL: (timedelta(seconds=5), timedelta(minutes=1)),
}
"""First delay and cap for each kind of failure; each attempt doubles the delay."""

MIN_RETRY = timedelta(seconds=1)
MAX_RETRY_AFTER = timedelta(hours=1)
_MAX_DOUBLINGS = 20
"""Far past every cap: 2**20 s is 12 days. Counting further would overflow
timedelta after about 45 failures in a row, which an outage reaches."""


@dataclasses.dataclass(frozen=True)
class RefreshPolicy:
    """spec.refreshBeforeSeconds or spec.refreshBeforePercentage; or the default."""

    before_seconds: int | None = None
    before_percentage: int | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """When to refresh, and a sentence for the status when the spec was overridden."""

    refresh_at: datetime
    note: str | None = None


def longest_lead(lifetime: timedelta, policy: RefreshPolicy) -> timedelta:
    """The earliest a refresh may come: half-life by default; with a lead set in
    the spec, once a tenth of the lifetime was used."""
    if policy.before_seconds is None and policy.before_percentage is None:
        return lifetime / 2
    return lifetime * (1 - MIN_USE_FRACTION)


def refresh_lead(
    lifetime: timedelta, policy: RefreshPolicy
) -> tuple[timedelta, str | None]:
    """How long before expiry to refresh a token of this lifetime."""
    longest = longest_lead(lifetime, policy)
    if policy.before_seconds is not None:
        lead = timedelta(seconds=policy.before_seconds)
        asked = f"refreshBeforeSeconds={policy.before_seconds}"
    elif policy.before_percentage is not None:
        lead = lifetime * policy.before_percentage / 100
        asked = f"refreshBeforePercentage={policy.before_percentage}"
    else:
        return min(max(lifetime / 3, DELIVERY_LEAD), longest), None

    if lead > longest:
        return longest, (
            f"{asked} would refresh continuously for a token that lives "
            f"{lifetime.total_seconds():.0f} s; refreshing "
            f"{longest.total_seconds():.0f} s before expiry instead"
        )
    return lead, None


def plan_refresh(
    issued_at: datetime,
    expires_at: datetime,
    policy: RefreshPolicy,
    rng: random.Random,
) -> Plan:
    """The instant to refresh a token, a little jittered so refreshes spread out.

    Jitter moves a refresh earlier, but never past the earliest instant the
    rules allow (``longest_lead``); a lead clamped there is jittered later
    instead, by the same small amount.
    """
    lifetime = max(expires_at - issued_at, timedelta(0))
    lead, note = refresh_lead(lifetime, policy)
    jitter = min(lead * JITTER_FRACTION, MAX_JITTER) * rng.random()
    if jitter > longest_lead(lifetime, policy) - lead:
        jitter = -jitter
    return Plan(refresh_at=expires_at - lead - jitter, note=note)


def retry_delay(
    attempt: int,
    retry: Retry,
    *,
    remaining: timedelta | None,
    retry_after: float | None,
    rng: random.Random,
) -> timedelta:
    """How long to wait before attempt ``attempt + 1`` after ``attempt`` failures.

    Exponential with jitter, but while a token is still valid a transient retry
    waits at most a third of its remaining lifetime (a credential retry, half),
    so several attempts happen before it expires. A server's Retry-After wins.
    """
    if retry_after is not None:
        seconds = min(
            max(retry_after, MIN_RETRY.total_seconds()), MAX_RETRY_AFTER.total_seconds()
        )
        return timedelta(seconds=seconds)

    first, cap = _BACKOFF[retry]
    delay = min(first * float(2 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS)), cap)
    delay *= 0.5 + 0.5 * rng.random()
    if remaining is not None and remaining > timedelta(0) and retry is not Retry.LOCAL:
        share = remaining / 3 if retry is Retry.TRANSIENT else remaining / 2
        delay = min(
            delay, max(share, first if retry is Retry.CREDENTIAL else MIN_RETRY)
        )
    return max(delay, MIN_RETRY)
