"""The watch event of a pass's own Secret write must not start another pass.

The event usually arrives while the pass is still reporting its status, before
it has noted the version it wrote; counting it as someone else's change cost
a second pass (two reads) per refresh (benchmarks/RESULTS.md). A change by
someone else during a pass, or a deletion, must still start one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tokenkeeper.keeper import Keeper
from tokenkeeper.reconcile import Memory
from tokenkeeper.target import ROLE_ACCESS_TOKEN, SECRET_ROLE_LABEL

WRITTEN_VERSION = "2"
BODY = {"metadata": {"namespace": "billing", "name": "api", "uid": "u-api"}}


class WritingPasses:
    """Each pass 'writes' the Secret at WRITTEN_VERSION, after the test's event."""

    def __init__(self) -> None:
        self.count = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def reconcile(self, body: Mapping[str, Any], memory: Memory) -> datetime:
        self.count += 1
        self.started.set()
        self.release.wait(10)
        memory.secret_version = WRITTEN_VERSION
        return datetime.now(UTC) + timedelta(hours=1)


def secret_event(version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "billing",
            "name": "api",
            "resourceVersion": version,
            "labels": {SECRET_ROLE_LABEL: ROLE_ACCESS_TOKEN},
            "ownerReferences": [
                {"kind": "ClientCredential", "name": "api", "controller": True}
            ],
        }
    }


def passes_after_an_event_during_the_first(event_type: str, version: str) -> int:
    async def scenario() -> int:
        passes = WritingPasses()
        keeper = Keeper(
            passes,  # type: ignore[arg-type]
            workers=1,
            clock=lambda: datetime.now(UTC),
        )
        keeper.upsert(BODY)
        await asyncio.get_running_loop().run_in_executor(None, passes.started.wait, 5)

        keeper.secret_changed(event_type, secret_event(version))
        passes.release.set()
        await asyncio.sleep(0.3)

        await keeper.stop()
        return passes.count

    return asyncio.run(scenario())


def test_the_event_of_the_pass_own_write_starts_no_second_pass() -> None:
    assert passes_after_an_event_during_the_first("MODIFIED", WRITTEN_VERSION) == 1


@pytest.mark.parametrize(
    ("event_type", "version"),
    [("MODIFIED", "3"), ("DELETED", WRITTEN_VERSION)],
    ids=["changed by someone else", "deleted"],
)
def test_a_change_during_a_pass_starts_another_pass_when_it_ends(
    event_type: str, version: str
) -> None:
    assert passes_after_an_event_during_the_first(event_type, version) == 2
