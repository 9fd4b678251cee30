"""Per-object refresh timers that need no finalizer, and the worker threads they feed.

kopf's own timers and daemons put a finalizer on every object they serve, so a
ClientCredential could not be deleted while the operator is down. The keeper
is our replacement: one small asyncio task per ClientCredential that sleeps
until its next pass is due or until something kicks it (a spec change, a
change of its client-secret Secret, its managed Secret deleted or edited).
Each pass runs ``Reconciler.reconcile`` in a bounded thread pool, so the
number of concurrent token requests and API writes is capped however many
objects fall due at once.

The keeper is fed by kopf's watch handlers and keeps nothing in the cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from tokenkeeper.kube import KubeError
from tokenkeeper.reconcile import Memory, Reconciler
from tokenkeeper.target import (
    REFRESH_REQUESTED_ANNOTATION,
    ROLE_ACCESS_TOKEN,
    ROLE_CLIENT_SECRET,
    SECRET_ROLE_LABEL,
    owner_name,
)

logger = logging.getLogger("tokenkeeper")

Key = tuple[str, str]
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds before retrying a pass that failed unexpectedly (API errors, bugs)."""


@dataclasses.dataclass
class _Entry:
    body: Mapping[str, Any]
    memory: Memory
    kicked: asyncio.Event
    task: asyncio.Task[None] | None = None
    errors: int = 0


class Keeper:
    """Schedules passes for every ClientCredential the operator serves."""

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        workers: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._reconciler = reconciler
        self._clock = clock
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="tokenkeeper"
        )
        self._entries: dict[Key, _Entry] = {}
        self._last_pass = clock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last_pass(self) -> datetime:
        """When a pass last finished, for the liveness check."""
        return self._last_pass

    # Fed by the ClientCredential watch.

    def upsert(self, body: Mapping[str, Any]) -> None:
        """Take the newest body of an object; kick it if what it asks for changed."""
        key = _key(body)
        uid = body["metadata"]["uid"]
        entry = self._entries.get(key)
        if entry is not None and entry.memory.uid != uid:
            self._cancel(key)
            entry = None
        if entry is None:
            entry = _Entry(body=body, memory=Memory(uid=uid), kicked=asyncio.Event())
            self._entries[key] = entry
            entry.task = asyncio.create_task(self._run(key, entry), name=f"keep {key}")
            return
        previous, entry.body = entry.body, body
        if _wants(previous) != _wants(body):
            entry.kicked.set()

    def remove(self, body: Mapping[str, Any]) -> None:
        key = _key(body)
        entry = self._entries.get(key)
        if entry is not None and entry.memory.uid == body["metadata"]["uid"]:
            self._cancel(key)

    # Fed by the Secret watch (label-selected, so only Secrets that concern us).

    def secret_changed(self, event_type: str | None, secret: Mapping[str, Any]) -> None:
        meta = secret.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), meta.get("name")
        role = (meta.get("labels") or {}).get(SECRET_ROLE_LABEL)
        if role == ROLE_ACCESS_TOKEN:
            owner = owner_name(secret)
            entry = self._entries.get((namespace, owner)) if owner else None
            if entry is not None and (
                event_type == "DELETED"
                or meta.get("resourceVersion") != entry.memory.secret_version
            ):
                entry.kicked.set()
        elif role == ROLE_CLIENT_SECRET:
            for (entry_namespace, _), entry in self._entries.items():
                if (
                    entry_namespace == namespace
                    and _client_secret_name(entry.body) == name
                ):
                    entry.kicked.set()

    # Lifecycle.

    async def stop(self) -> None:
        """Cancel every timer, then let passes already running finish their writes."""
        for key in list(self._entries):
            self._cancel(key)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._pool.shutdown(wait=True, cancel_futures=True)
        )

    def _cancel(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    async def _run(self, key: Key, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entry.kicked.clear()
            try:
                next_at = await loop.run_in_executor(
                    self._pool, self._reconciler.reconcile, entry.body, entry.memory
                )
                entry.errors = 0
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                next_at = self._after_error(key, entry, str(e))
            except Exception as e:
                # A bug must not stop this object's timer, nor touch any other object.
                logger.exception(
                    "[%s/%s] Unexpected %s in a pass", *key, type(e).__name__
                )
                next_at = self._after_error(key, entry, None)
            self._last_pass = self._clock()

            delay = (next_at - self._clock()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.kicked.wait(), timeout=delay)

    def _after_error(self, key: Key, entry: _Entry, message: str | None) -> datetime:
        delay = ERROR_BACKOFF[min(entry.errors, len(ERROR_BACKOFF) - 1)]
        entry.errors += 1
        if message:
            logger.warning("[%s/%s] %s; retrying in %.0f s.", *key, message, delay)
        return self._clock() + timedelta(seconds=delay)


def _key(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return meta["namespace"], meta["name"]


def _wants(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What about an object calls for a pass; status writes (ours) do not."""
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    return meta.get("generation"), annotations.get(REFRESH_REQUESTED_ANNOTATION)


def _client_secret_name(body: Mapping[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("clientSecretRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) else None
