"""An object found gone by its own status write is forgotten, not retried forever.

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
