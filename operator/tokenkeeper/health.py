"""The liveness verdict: whether this operator can still do its job.

kopf answers its liveness endpoint for as long as its event loop runs. An
operator whose loop runs but that no longer refreshes tokens must fail it too,
so that kubelet restarts it. ``handlers`` asks ``problems`` from a
``@kopf.on.probe`` handler and raises when there are any, which makes kopf
answer HTTP 500. Three failures are caught:

* Passes stall: a pass that fell due has not finished for longer than the
  stall limit (``--stall-timeout``): every worker thread hangs in a call that
  never returns, or an object's timer stopped. ``Keeper.overdue`` measures it.
* A watch stalls: a write of ours has not come back as a watch event for
  longer than twice kopf's inactivity timeout. kopf reconnects a stream that
  stays silent that long (the API server sends a bookmark every minute), so
  by then a reconnect has failed as well. ``WatchEcho`` measures it.
* The peering gate stopped, so a standby would never take over.

The choice behind ``WatchEcho``: a watch is judged by the echo of our own
writes, not by the time since its last event. kopf gives handlers neither
bookmarks nor the state of its streams, and a quiet cluster rightly sends no
events; but each write of ours changes a watched object, and a live stream
must deliver that change.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kubernetes

from tokenkeeper.kube import Kube

WatchKey = tuple[str, str, str]
"""(resource plural, namespace, name) of a watched object."""
SECRETS, CREDENTIALS = "secrets", "clientcredentials"


class Scheduler(Protocol):
    """What the verdict needs of the keeper (a fake in unit tests)."""

    @property
    def active(self) -> bool: ...

    def overdue(self) -> tuple[tuple[str, str], float] | None: ...


@dataclasses.dataclass(frozen=True)
class Limits:
    stall: float
    """Seconds a due pass may take to finish."""
    echo: float
    """Seconds a write of ours may take to come back through its watch."""


class WatchEcho:
    """Which of our writes a watch has not delivered yet, and since when.

    ``wrote`` is called from worker threads when a write returns, ``seen`` from
    the event loop for every watch event; either may come first. A write is
    settled by any later event of its object, or by one that already showed
    the version the write produced (the echo beat the write's return, or the
    write changed nothing).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[WatchKey, tuple[str | None, float]] = {}
        self._waiting: dict[WatchKey, float] = {}

    def now(self) -> float:
        return self._clock()

    def wrote(self, key: WatchKey, version: str | None, started: float) -> None:
        """A write that began at ``started`` left the object at ``version``."""
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and (seen[0] == version or seen[1] >= started):
                return
            self._waiting.setdefault(key, self._clock())

    def seen(self, key: WatchKey, version: str | None) -> None:
        with self._lock:
            self._seen[key] = (version, self._clock())
            self._waiting.pop(key, None)

    def event(
        self, resource: str, event_type: str | None, body: Mapping[str, Any]
    ) -> None:
        """A watch event, as a kopf handler receives it."""
        key = watch_key(resource, body)
        if event_type == "DELETED":
            self.forget(key)
        else:
            self.seen(key, version_of(body))

    def forget(self, key: WatchKey) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._waiting.pop(key, None)

    def clear(self) -> None:
        """Forget every write: the watches were paused, so no echo was due."""
        with self._lock:
            self._waiting.clear()

    def oldest(self) -> tuple[WatchKey, float] | None:
        """The write that has waited longest for its echo, and for how many seconds."""
        with self._lock:
            if not self._waiting:
                return None
            key, since = min(self._waiting.items(), key=lambda item: item[1])
        return key, self._clock() - since


class EchoedKube(Kube):
    """``Kube`` that tells a ``WatchEcho`` of every write a watch must deliver."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, echo: WatchEcho
    ) -> None:
        super().__init__(api_client)
        self._echo = echo

    def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        started = self._echo.now()
        written = super().create_secret(namespace, body)
        self._wrote(SECRETS, written, started)
        return written

    def replace_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        started = self._echo.now()
        written = super().replace_secret(namespace, body)
        self._wrote(SECRETS, written, started)
        return written

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        started = self._echo.now()
        written = super().patch_status(namespace, name, status)
        self._wrote(CREDENTIALS, written, started)
        return written

    def _wrote(self, resource: str, body: Mapping[str, Any], started: float) -> None:
        self._echo.wrote(watch_key(resource, body), version_of(body), started)


def watch_key(resource: str, body: Mapping[str, Any]) -> WatchKey:
    meta = body.get("metadata") or {}
    return resource, str(meta.get("namespace")), str(meta.get("name"))


def version_of(body: Mapping[str, Any]) -> str | None:
    version = (body.get("metadata") or {}).get("resourceVersion")
    return version if isinstance(version, str) else None


def problems(
    keeper: Scheduler,
    echo: WatchEcho,
    limits: Limits,
    *,
    gate_running: bool = True,
) -> list[str]:
    """What keeps this operator from doing its job, as sentences; empty if nothing."""
    found = []

    overdue = keeper.overdue()
    if overdue is not None and overdue[1] > limits.stall:
        (namespace, name), seconds = overdue
        found.append(
            f"A pass for {namespace}/{name} fell due {seconds:.0f} s ago and has "
            f"not finished (limit {limits.stall:.0f} s): the worker pool is "
            "wedged or the object's timer stopped"
        )

    # A standby's watches are paused: a write it finished meanwhile gets no echo.
    waiting = echo.oldest() if keeper.active else None
    if waiting is not None and waiting[1] > limits.echo:
        (resource, namespace, name), seconds = waiting
        found.append(
            f"The {resource} watch has not delivered our write to "
            f"{namespace}/{name} for {seconds:.0f} s (limit {limits.echo:.0f} s): "
            "the watch is stalled"
        )

    if not gate_running:
        found.append(
            "The peering gate stopped, so this replica would never take over "
            "from another"
        )
    return found
