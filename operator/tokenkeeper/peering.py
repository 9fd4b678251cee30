"""High availability: which replica refreshes tokens, decided by kopf's peering rule.

With ``--peering NAME`` every replica writes keep-alives into the
ClusterKopfPeering object NAME (kopf.dev/v1), and kopf pauses a replica while
it sees a live peer of the same or a higher priority. kopf pauses only its
watch streams and its own daemons and timers, and tells no handler about it;
the keeper's timers are tokenkeeper's own and would go on refreshing in a
paused replica. So ``Gate`` applies kopf's rule to the same object itself,
every couple of seconds, and pauses or resumes the keeper: a standby requests
no token and writes nothing.

Priorities must differ, since two replicas of equal priority both pause. The
default is seniority: the replica that started first ranks highest, with
random low digits to break a tie. A new pod therefore never preempts a working
one: in a rolling update the active replica hands over once, when it exits
(kopf removes an exiting replica from the peering object, and the standby
takes over at its next look). After a crash the standby takes over once the
crashed replica's last keep-alive expires, which ``--peering-lifetime`` bounds.

Only cluster-wide operators are supported: a namespaced one would use one
KopfPeering per namespace, which this gate does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenkeeper.health import WatchEcho
from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import Conflict, Kube, KubeError

logger = logging.getLogger("tokenkeeper")

DEFAULT_LIFETIME = 30
"""Seconds a keep-alive counts; kopf's own default (60) would double failover time."""
KOPF_DEFAULT_LIFETIME = 60
"""What kopf assumes for a peer that states no lifetime."""
MAX_INTERVAL = 2.0
"""The gate looks at the peering object at least this often (seconds)."""


def own_identity() -> str:
    """This replica's name in the peering object: the pod's name, else host/pid."""
    pod = os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}/{os.getpid()}"


def seniority(started: datetime, rng: random.Random) -> int:
    """A priority that falls with the start time: the oldest replica ranks highest."""
    milliseconds = int(started.timestamp() * 1000)
    return -(milliseconds * 1000 + rng.randrange(1000))


def blockers(
    peering: Mapping[str, Any], identity: str, priority: int, now: datetime
) -> list[str]:
    """Live peers that kopf pauses this replica for: priority equal or higher."""
    found = []
    for peer, info in (peering.get("status") or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        lastseen = _instant(info.get("lastseen")) or now
        lifetime = timedelta(seconds=int(info.get("lifetime", KOPF_DEFAULT_LIFETIME)))
        if lastseen + lifetime <= now:
            continue
        if int(info.get("priority", 0)) >= priority:
            found.append(str(peer))
    return sorted(found)


class Gate:
    """Keeps the keeper running on the active replica only."""

    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        identity: str,
        priority: int,
        lifetime: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.name = name
        self.identity = identity
        self.priority = priority
        self.lifetime = lifetime
        self.interval = min(MAX_INTERVAL, lifetime / 4)
        self._kube = kube
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def ensure_object(self) -> None:
        """Create the peering object if missing: kopf waits forever without it."""
        found = await asyncio.to_thread(self._kube.get_peering, self.name, 10.0)
        if found is not None:
            return
        with contextlib.suppress(Conflict):  # another replica was quicker
            await asyncio.to_thread(self._kube.create_peering, self.name)
            logger.info("Created the peering object %s.", self.name)

    def start(self, keeper: Keeper, echo: WatchEcho) -> None:
        self._task = asyncio.create_task(self._run(keeper, echo), name="peering gate")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, keeper: Keeper, echo: WatchEcho) -> None:
        trouble = ""
        while True:
            active, why = await self._look()
            if active and not keeper.active:
                logger.info(
                    "This replica (%s, priority %d) is now the active one.",
                    self.identity,
                    self.priority,
                )
                echo.clear()
                keeper.resume()
            elif active is False and keeper.active:
                logger.info("Standing by: %s.", why)
                keeper.pause()
                echo.clear()
            elif active is None and why != trouble:
                logger.warning(
                    "Peering: %s; this replica stays %s meanwhile.",
                    why,
                    "active" if keeper.active else "on standby",
                )
            trouble = why if active is None else ""
            await asyncio.sleep(self.interval)

    async def _look(self) -> tuple[bool | None, str]:
        """Whether this replica should be the active one, and why; None if unknown."""
        try:
            peering = await asyncio.to_thread(
                self._kube.get_peering, self.name, self.interval + 5
            )
        except KubeError as e:
            return None, f"cannot read the peering object {self.name}: {e}"
        if peering is None:
            return None, (
                f"the peering object {self.name} does not exist, and kopf pauses "
                "every replica until it does"
            )
        ahead = blockers(peering, self.identity, self.priority, self._clock())
        if ahead:
            return False, f"peer {', '.join(ahead)} is active"
        return True, ""


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)
