"""Refresh timing and retry arithmetic, with fixed instants and fixed randomness."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from tokenkeeper.endpoint import Retry
from tokenkeeper.schedule import (
    DELIVERY_LEAD,
    RefreshPolicy,
    plan_refresh,
    refresh_lead,
    retry_delay,
)

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


class FullJitter(random.Random):
    def random(self) -> float:
        return 0.999999


@pytest.mark.parametrize(
    ("lifetime", "lead"),
    [
        (300, 120),  # a third is 100 s: the 120 s delivery lead wins
        (3600, 1200),  # a third of the lifetime
        (60, 30),  # 120 s would be before half-life: half-life instead
        (200, 100),  # 120 s would be before half-life (100 s)
        (240, 120),  # exactly half
    ],
)
def test_default_lead_is_a_third_but_at_least_delivery_and_never_before_half_life(
    lifetime: int, lead: int
) -> None:
    got, note = refresh_lead(timedelta(seconds=lifetime), RefreshPolicy())

    assert got == timedelta(seconds=lead)
    assert note is None


def test_default_delivery_lead_is_two_minutes() -> None:
    assert timedelta(seconds=120) == DELIVERY_LEAD


def test_refresh_before_seconds_is_used_as_given() -> None:
    got, note = refresh_lead(timedelta(seconds=300), RefreshPolicy(before_seconds=45))

    assert got == timedelta(seconds=45)
    assert note is None


def test_refresh_before_percentage_is_a_share_of_the_lifetime() -> None:
    got, note = refresh_lead(
        timedelta(seconds=300), RefreshPolicy(before_percentage=20)
    )

    assert got == timedelta(seconds=60)
    assert note is None


@pytest.mark.parametrize("before", [290, 300, 3600])
def test_lead_that_would_refresh_continuously_is_clamped_and_says_so(
    before: int,
) -> None:
    got, note = refresh_lead(
        timedelta(seconds=300), RefreshPolicy(before_seconds=before)
    )

    assert got == timedelta(seconds=270)
    assert note is not None
    assert f"refreshBeforeSeconds={before}" in note
    assert "270 s before expiry" in note


def test_plan_without_jitter_lands_exactly_on_the_computed_instant() -> None:
    plan = plan_refresh(T0, T0 + timedelta(seconds=300), RefreshPolicy(), NoJitter())

    assert plan.refresh_at == T0 + timedelta(seconds=180)


def test_jitter_only_ever_moves_a_refresh_earlier_and_by_at_most_five_seconds() -> None:
    plan = plan_refresh(T0, T0 + timedelta(seconds=3600), RefreshPolicy(), FullJitter())

    exact = T0 + timedelta(seconds=2400)
    assert exact - timedelta(seconds=5) <= plan.refresh_at < exact


def test_jitter_never_brings_a_refresh_before_half_life() -> None:
    plan = plan_refresh(T0, T0 + timedelta(seconds=30), RefreshPolicy(), FullJitter())

    half_life = T0 + timedelta(seconds=15)
    assert half_life < plan.refresh_at <= half_life + timedelta(seconds=0.75)


@pytest.mark.parametrize("lifetime", [30, 100, 200, 239, 240, 300, 3600])
@pytest.mark.parametrize("rng", [NoJitter(), FullJitter()])
def test_default_refresh_is_never_before_half_life_nor_closer_than_95_percent_of_lead(
    lifetime: int, rng: random.Random
) -> None:
    expires_at = T0 + timedelta(seconds=lifetime)
    lead, _ = refresh_lead(timedelta(seconds=lifetime), RefreshPolicy())

    plan = plan_refresh(T0, expires_at, RefreshPolicy(), rng)

    assert plan.refresh_at >= T0 + timedelta(seconds=lifetime) / 2
    assert expires_at - plan.refresh_at >= lead * 0.95


@pytest.mark.parametrize("before", [270, 1000])
def test_clamped_lead_is_not_jittered_past_a_tenth_of_the_lifetime(before: int) -> None:
    plan = plan_refresh(
        T0,
        T0 + timedelta(seconds=300),
        RefreshPolicy(before_seconds=before),
        FullJitter(),
    )

    assert plan.refresh_at >= T0 + timedelta(seconds=30)


@pytest.mark.parametrize("retry", list(Retry))
@pytest.mark.parametrize("attempt", [40, 50, 1000, 10_000])
def test_backoff_after_very_many_failures_stays_at_its_cap(
    retry: Retry, attempt: int
) -> None:
    delay = retry_delay(
        attempt, retry, remaining=None, retry_after=None, rng=FullJitter()
    )

    assert timedelta(seconds=1) <= delay <= timedelta(minutes=10)


@pytest.mark.parametrize("retry_after", [1e15, 1e308, float("inf")])
def test_absurd_retry_after_is_capped_at_an_hour(retry_after: float) -> None:
    delay = retry_delay(
        1, Retry.TRANSIENT, remaining=None, retry_after=retry_after, rng=NoJitter()
    )

    assert delay == timedelta(hours=1)


def test_transient_backoff_doubles_until_its_cap() -> None:
    delays = [
        retry_delay(
            n, Retry.TRANSIENT, remaining=None, retry_after=None, rng=FullJitter()
        )
        for n in range(1, 12)
    ]

    assert delays[0] == pytest.approx(timedelta(seconds=1), abs=timedelta(seconds=0.01))
    assert delays[3] == pytest.approx(timedelta(seconds=8), abs=timedelta(seconds=0.01))
    assert max(delays) <= timedelta(minutes=5)
    assert delays == sorted(delays)


def test_transient_backoff_leaves_room_for_several_attempts_before_expiry() -> None:
    remaining = timedelta(seconds=60)
    attempts = 0
    elapsed = timedelta(0)
    while elapsed < remaining - timedelta(seconds=1):
        attempts += 1
        elapsed += retry_delay(
            attempts,
            Retry.TRANSIENT,
            remaining=remaining - elapsed,
            retry_after=None,
            rng=FullJitter(),
        )

    assert attempts >= 5


def test_credential_errors_back_off_slowly() -> None:
    first = retry_delay(
        1, Retry.CREDENTIAL, remaining=None, retry_after=None, rng=FullJitter()
    )
    later = retry_delay(
        6, Retry.CREDENTIAL, remaining=None, retry_after=None, rng=FullJitter()
    )

    assert first >= timedelta(seconds=29)
    assert later == pytest.approx(timedelta(minutes=10), abs=timedelta(seconds=1))


def test_retry_after_is_honoured_over_the_backoff() -> None:
    delay = retry_delay(
        1,
        Retry.TRANSIENT,
        remaining=timedelta(seconds=10),
        retry_after=42,
        rng=NoJitter(),
    )

    assert delay == timedelta(seconds=42)


def test_jitter_spreads_retries_between_half_and_full_delay() -> None:
    rng = random.Random(7)
    delays = {
        retry_delay(4, Retry.TRANSIENT, remaining=None, retry_after=None, rng=rng)
        for _ in range(50)
    }

    assert len(delays) > 40
    assert all(timedelta(seconds=4) <= d <= timedelta(seconds=8) for d in delays)
