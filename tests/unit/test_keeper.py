"""What the keeper keeps and forgets: an object found gone, and the bodies it holds.

An object found gone by its own status write is forgotten, not retried forever.

kopf reports no deletion that happened while its watch was down, so the
keeper would otherwise keep a ghost that recreates a garbage-collected Secret
on every pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenkeeper.keeper import Keeper
from tokenkeeper.reconcile import CredentialGone, Memory

GONE = {"metadata": {"namespace": "billing", "name": "gone", "uid": "u-gone"}}
HERE = {"metadata": {"namespace": "billing", "name": "here", "uid": "u-here"}}


class Passes:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def reconcile(self, body: Mapping[str, Any], memory: Memory) -> datetime:
        name = body["metadata"]["name"]
        self.count[name] = self.count.get(name, 0) + 1
        if name == "gone":
            raise CredentialGone
        return datetime.now(UTC) + timedelta(milliseconds=100)


def test_a_credential_found_gone_is_dropped_and_the_others_keep_running() -> None:
    async def scenario() -> tuple[int, dict[str, int]]:
        passes = Passes()
        keeper = Keeper(
            passes,  # type: ignore[arg-type]
            workers=2,
            clock=lambda: datetime.now(UTC),
        )
        keeper.upsert(GONE)
        keeper.upsert(HERE)
        await asyncio.sleep(1.5)
        served = len(keeper)
        await keeper.stop()
        return served, passes.count

    served, count = asyncio.run(scenario())

    assert served == 1
    assert count["gone"] == 1
    assert count["here"] >= 3


class Recording:
    def __init__(self) -> None:
        self.bodies: list[Mapping[str, Any]] = []

    def reconcile(self, body: Mapping[str, Any], memory: Memory) -> datetime:
        self.bodies.append(body)
        return datetime.now(UTC) + timedelta(hours=1)


def test_passes_get_the_body_without_its_managed_fields() -> None:
    body = {
        "metadata": {
            **HERE["metadata"],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"clientID": "here"},
    }

    async def scenario() -> list[Mapping[str, Any]]:
        passes = Recording()
        keeper = Keeper(
            passes,  # type: ignore[arg-type]
            workers=1,
            clock=lambda: datetime.now(UTC),
        )
        keeper.upsert(body)
        await asyncio.sleep(0.3)
        await keeper.stop()
        return passes.bodies

    [seen] = asyncio.run(scenario())

    assert "managedFields" not in seen["metadata"]
    assert seen["metadata"]["uid"] == "u-here"
    assert seen["spec"] == {"clientID": "here"}
    assert "managedFields" in body["metadata"]
