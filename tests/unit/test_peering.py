"""kopf's peering rule as tokenkeeper applies it, and the gate pausing the keeper."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tokenkeeper.health import WatchEcho
from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import KubeError
from tokenkeeper.peering import Gate, blockers, seniority

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
ME = "tokenkeeper-7d9-abc"


def peer(priority: int, seen_ago: float = 1, lifetime: int = 30) -> dict[str, Any]:
    lastseen = T0 - timedelta(seconds=seen_ago)
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": lastseen.isoformat(),
    }


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ({}, []),
        ({"older": peer(10)}, ["older"]),
        ({"equal": peer(5)}, ["equal"]),  # kopf pauses both of an equal pair
        ({"younger": peer(4)}, []),
        ({"crashed": peer(10, seen_ago=31)}, []),  # its keep-alive expired
        ({"leaving": peer(10, lifetime=0)}, []),  # kopf's farewell on exit
        ({"b": peer(9), "a": peer(7), "c": peer(1)}, ["a", "b"]),
    ],
)
def test_live_peers_of_equal_or_higher_priority_block(
    others: dict[str, Any], expected: list[str]
) -> None:
    peering = {"status": {ME: peer(5), **others}}

    assert blockers(peering, ME, 5, T0) == expected


def test_a_peer_without_lastseen_counts_as_just_seen_as_kopf_does() -> None:
    peering = {"status": {"other": {"priority": 9}}}

    assert blockers(peering, ME, 5, T0) == ["other"]


def test_the_replica_that_started_first_ranks_highest() -> None:
    rng = random.Random(7)

    first = seniority(T0, rng)
    second = seniority(T0 + timedelta(milliseconds=1), rng)

    assert first > second


def test_replicas_started_in_the_same_millisecond_still_differ() -> None:
    priorities = {seniority(T0, random.Random(seed)) for seed in range(20)}

    assert len(priorities) > 1


class FakeKube:
    def __init__(self, peering: dict[str, Any] | None) -> None:
        self.peering = peering
        self.failing = False
        self.created: list[str] = []

    def get_peering(self, name: str, timeout: float) -> dict[str, Any] | None:
        if self.failing:
            raise KubeError(f"GET clusterkopfpeering {name}", None)
        return self.peering

    def create_peering(self, name: str) -> dict[str, Any]:
        self.created.append(name)
        self.peering = {"metadata": {"name": name}}
        return self.peering


class Idle:
    def reconcile(self, *_: Any) -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)


def gate_for(kube: FakeKube, priority: int = 5) -> Gate:
    return Gate(
        kube,  # type: ignore[arg-type]
        name="tokenkeeper",
        identity=ME,
        priority=priority,
        lifetime=2,
        clock=lambda: datetime.now(UTC),
    )


def live(priority: int) -> dict[str, Any]:
    return {
        "priority": priority,
        "lifetime": 30,
        "lastseen": datetime.now(UTC).isoformat(),
    }


def test_the_gate_pauses_for_a_senior_peer_and_resumes_when_it_leaves() -> None:
    async def scenario() -> list[bool]:
        kube = FakeKube({"status": {ME: live(5), "senior": live(9)}})
        keeper = Keeper(Idle(), workers=1, clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
        gate = gate_for(kube)
        seen = [keeper.active]

        gate.start(keeper, WatchEcho())
        await asyncio.sleep(0.2)
        seen.append(keeper.active)
        kube.peering = {"status": {ME: live(5)}}
        await asyncio.sleep(gate.interval + 0.3)
        seen.append(keeper.active)
        await gate.stop()
        await keeper.stop()
        return seen

    assert asyncio.run(scenario()) == [True, False, True]


def test_the_gate_keeps_the_keeper_as_it_is_while_the_api_cannot_be_read() -> None:
    async def scenario() -> tuple[bool, bool]:
        kube = FakeKube({"status": {ME: live(5)}})
        kube.failing = True
        keeper = Keeper(
            Idle(),  # type: ignore[arg-type]
            workers=1,
            clock=lambda: datetime.now(UTC),
            active=False,
        )
        gate = gate_for(kube)

        gate.start(keeper, WatchEcho())
        await asyncio.sleep(0.2)
        running = gate.running
        await gate.stop()
        await keeper.stop()
        return keeper.active, running

    active, running = asyncio.run(scenario())

    assert not active
    assert running


def test_a_missing_peering_object_is_created_once() -> None:
    kube = FakeKube(None)
    gate = gate_for(kube)

    asyncio.run(gate.ensure_object())
    asyncio.run(gate.ensure_object())

    assert kube.created == ["tokenkeeper"]
