"""The liveness verdict and the keeper facts it rests on, with fake clocks and passes.

Each way the operator can be alive but useless must turn the verdict into a
problem: a pass that stays overdue (wedged pool, stopped timer), a write that
never comes back through its watch, a peering gate that stopped. A standby's
paused watches must not count against it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tokenkeeper.health import Limits, WatchEcho, problems
from tokenkeeper.keeper import Keeper
from tokenkeeper.reconcile import Memory

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(stall=60, echo=140)
KEY = ("secrets", "billing", "api")


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeKeeper:
    def __init__(self, overdue: float | None = None, *, active: bool = True) -> None:
        self._overdue = overdue
        self.active = active

    def overdue(self) -> tuple[tuple[str, str], float] | None:
        if self._overdue is None:
            return None
        return ("billing", "api"), self._overdue


class Passes:
    """A reconciler whose passes return at once, or hang until released."""

    def __init__(
        self, clock: FakeClock, *, hang: bool = False, interval: float = 1
    ) -> None:
        self.clock = clock
        self.hang = hang
        self.interval = timedelta(seconds=interval)
        self.release = threading.Event()
        self.started = threading.Event()
        self.count = 0

    def reconcile(self, body: Mapping[str, Any], memory: Memory) -> datetime:
        self.count += 1
        self.started.set()
        if self.hang:
            self.release.wait(30)
        return self.clock() + self.interval


def credential(name: str = "api") -> dict[str, Any]:
    return {"metadata": {"namespace": "billing", "name": name, "uid": f"u-{name}"}}


def keeper_with(passes: Passes, clock: FakeClock, **options: Any) -> Keeper:
    return Keeper(passes, workers=1, clock=clock, **options)  # type: ignore[arg-type]


# The verdict.


def test_a_healthy_operator_has_no_problems() -> None:
    assert problems(FakeKeeper(overdue=5), WatchEcho(), LIMITS) == []


def test_a_pass_overdue_past_the_stall_limit_is_a_problem() -> None:
    [problem] = problems(FakeKeeper(overdue=61), WatchEcho(), LIMITS)

    assert "billing/api" in problem
    assert "wedged" in problem


def test_a_write_without_its_watch_event_past_the_limit_is_a_problem() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    echo.wrote(KEY, "7", started=clock())

    clock.now += 141

    [problem] = problems(FakeKeeper(), echo, LIMITS)
    assert "secrets watch" in problem
    assert "billing/api" in problem


def test_a_standby_is_not_blamed_for_echoes_its_paused_watches_cannot_bring() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    echo.wrote(KEY, "7", started=clock())

    clock.now += 1000

    assert problems(FakeKeeper(active=False), echo, LIMITS) == []


def test_a_stopped_peering_gate_is_a_problem() -> None:
    [problem] = problems(FakeKeeper(), WatchEcho(), LIMITS, gate_running=False)

    assert "peering gate" in problem


# WatchEcho.


def test_the_watch_event_settles_a_write() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    echo.wrote(KEY, "7", started=clock())

    clock.now += 1
    echo.seen(KEY, "7")
    clock.now += 1000

    assert echo.oldest() is None


def test_an_echo_that_beats_the_write_returning_settles_it() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    started = clock()
    clock.now += 0.1
    echo.seen(KEY, "7")

    echo.wrote(KEY, "7", started=started)

    assert echo.oldest() is None


def test_a_write_that_changed_nothing_expects_no_echo() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    echo.seen(KEY, "7")
    clock.now += 60

    echo.wrote(KEY, "7", started=clock())

    assert echo.oldest() is None


def test_an_unrelated_event_settles_nothing_and_the_oldest_write_is_reported() -> None:
    clock = Seconds()
    echo = WatchEcho(clock)
    echo.wrote(KEY, "7", started=clock())
    clock.now += 10
    echo.wrote(("clientcredentials", "billing", "api"), "8", started=clock())

    echo.seen(("secrets", "billing", "other"), "9")
    clock.now += 5

    assert echo.oldest() == (KEY, 15)


def test_a_deletion_event_forgets_the_object() -> None:
    echo = WatchEcho()
    echo.wrote(KEY, "7", started=echo.now())

    echo.event(
        "secrets", "DELETED", {"metadata": {"namespace": "billing", "name": "api"}}
    )

    assert echo.oldest() is None


# The keeper's side: overdue passes, pausing, a bounded stop.


def test_a_timer_that_does_not_fire_makes_its_pass_overdue() -> None:
    async def scenario() -> tuple[float, float | None]:
        clock = FakeClock()
        passes = Passes(clock, interval=10)
        keeper = keeper_with(passes, clock)
        keeper.upsert(credential())
        while passes.count == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        fresh = keeper.overdue()

        clock.advance(40)  # the timer was due 10 s in; the loop never ran it
        late = keeper.overdue()
        await keeper.stop()
        return (late[1] if late else -1.0), (fresh[1] if fresh else None)

    late, fresh = asyncio.run(scenario())

    assert fresh is None
    assert late == pytest.approx(30)


def test_a_pass_wedged_in_the_pool_stays_overdue_until_it_returns() -> None:
    async def scenario() -> tuple[float, float | None]:
        clock = FakeClock()
        passes = Passes(clock, hang=True)
        keeper = keeper_with(passes, clock)
        keeper.upsert(credential())
        await asyncio.to_thread(passes.started.wait, 5)

        clock.advance(300)
        wedged = keeper.overdue()
        passes.release.set()
        while passes.count < 2:
            await asyncio.sleep(0.01)
        passes.hang = False
        await asyncio.sleep(0.05)
        after = keeper.overdue()
        await keeper.stop()
        return (wedged[1] if wedged else -1.0), (after[1] if after else None)

    wedged, after = asyncio.run(scenario())

    assert wedged == pytest.approx(300)
    assert after is None


def test_a_paused_keeper_runs_no_pass_and_is_never_overdue() -> None:
    async def scenario() -> tuple[int, object, int, int]:
        clock = FakeClock()
        passes = Passes(clock)
        keeper = keeper_with(passes, clock, active=False)
        keeper.upsert(credential())
        await asyncio.sleep(0.1)
        clock.advance(1000)
        while_paused = passes.count, keeper.overdue(), keeper.managed()

        keeper.resume()
        while passes.count == 0:
            await asyncio.sleep(0.01)
        await keeper.stop()
        return (*while_paused, passes.count)

    count, overdue, managed, after_resume = asyncio.run(scenario())

    assert count == 0
    assert overdue is None
    assert managed == 0
    assert after_resume == 1


def test_pausing_drops_every_object_and_its_series() -> None:
    forgotten: list[tuple[str, str]] = []

    class Recorder:
        def forget(self, namespace: str, name: str) -> None:
            forgotten.append((namespace, name))

        def reported(self, *_: object) -> None:
            pass

    async def scenario() -> int:
        clock = FakeClock()
        keeper = keeper_with(Passes(clock), clock, observer=Recorder())
        keeper.upsert(credential("a"))
        keeper.upsert(credential("b"))
        await asyncio.sleep(0.05)

        keeper.pause()
        left = len(keeper)
        await keeper.stop()
        return left

    left = asyncio.run(scenario())

    assert left == 0
    assert sorted(set(forgotten)) == [("billing", "a"), ("billing", "b")]


def test_stop_gives_up_on_a_hung_pass_after_the_shutdown_timeout() -> None:
    async def scenario() -> tuple[bool, float]:
        clock = FakeClock()
        passes = Passes(clock, hang=True)
        keeper = keeper_with(passes, clock, shutdown_timeout=0.5)
        keeper.upsert(credential())
        await asyncio.to_thread(passes.started.wait, 5)

        began = time.monotonic()
        await keeper.stop()
        took = time.monotonic() - began
        passes.release.set()
        return keeper.abandoned, took

    abandoned, took = asyncio.run(scenario())

    assert abandoned
    assert took < 2


def test_stop_waits_for_a_running_pass_that_finishes_in_time() -> None:
    async def scenario() -> tuple[bool, int]:
        clock = FakeClock()
        passes = Passes(clock, hang=True)
        keeper = keeper_with(passes, clock, shutdown_timeout=5)
        keeper.upsert(credential())
        await asyncio.to_thread(passes.started.wait, 5)
        threading.Timer(0.3, passes.release.set).start()

        await keeper.stop()
        return keeper.abandoned, passes.count

    abandoned, count = asyncio.run(scenario())

    assert not abandoned
    assert count == 1
