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
On a standby replica it is paused (see ``peering``): it drops its objects
and runs no pass until it is the active replica again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from tokenkeeper.kube import KubeError
from tokenkeeper.observer import Observer
from tokenkeeper.reconcile import CredentialGone, Memory, Reconciler
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
    due_at: datetime | None = None
    """When the next pass falls due; in the past while one is queued or running."""
    in_pass: bool = False
    seen_during_pass: str | None = None
    """The managed Secret's last watch event while a pass ran: its version, or ""
    for a deletion. Judged when the pass ends, when its own write is known."""


class Keeper:
    """Schedules passes for every ClientCredential the operator serves."""

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        workers: int,
        clock: Callable[[], datetime],
        observer: Observer | None = None,
        active: bool = True,
        shutdown_timeout: float = 20.0,
    ) -> None:
        self._reconciler = reconciler
        self._clock = clock
        self._observer = observer or Observer()
        self._active = asyncio.Event()
        if active:
            self._active.set()
        self._shutdown_timeout = shutdown_timeout
        self.abandoned = False
        """Set by ``stop`` when passes were still running at its deadline."""
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
        body = _slim(body)
        key = _key(body)
        uid = body["metadata"]["uid"]
        entry = self._entries.get(key)
        if entry is not None and entry.memory.uid != uid:
            self._cancel(key)
            entry = None
        if entry is None:
            entry = _Entry(
                body=body,
                memory=Memory(uid=uid),
                kicked=asyncio.Event(),
                due_at=self._clock(),
            )
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
            if entry is None:
                return
            version = "" if event_type == "DELETED" else meta.get("resourceVersion")
            if entry.in_pass:
                # Most likely the pass's own write, which it has not noted yet.
                entry.seen_during_pass = version or ""
            elif version != entry.memory.secret_version:
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
        """Cancel every timer, then let passes already running finish their writes.

        Queued passes never start. Running ones get ``shutdown_timeout`` seconds;
        one still running then (a call that hangs) is left behind and
        ``abandoned`` is set, so that the process exits within its grace period.
        """
        for key in list(self._entries):
            self._cancel(key)

        # Waited for from a daemon thread: asyncio.run joins the default
        # executor's threads at exit, and a hung pass would hold one forever.
        loop = asyncio.get_running_loop()
        drained = asyncio.Event()

        def drain() -> None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(drained.set)

        threading.Thread(target=drain, name="tokenkeeper-drain", daemon=True).start()
        try:
            await asyncio.wait_for(drained.wait(), timeout=self._shutdown_timeout)
        except TimeoutError:
            self.abandoned = True
            logger.warning(
                "Passes were still running %.0f s after shutdown began; exiting "
                "without them. A token obtained by one may not have reached its "
                "Secret; the next operator requests a new one if needed.",
                self._shutdown_timeout,
            )

    # Peering: only the active replica runs passes (see ``peering``).

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def pause(self) -> None:
        """Stand by: drop every object, and run no pass until ``resume``.

        Objects are dropped rather than kept, because kopf pauses the watches
        that would report their changes; it lists them all again when it
        resumes. Objects it reports meanwhile wait for ``resume``.
        """
        self._active.clear()
        for key in list(self._entries):
            self._cancel(key)

    def resume(self) -> None:
        self._active.set()

    # Health and metrics.

    def managed(self) -> int:
        """Objects served: 0 while standing by."""
        return len(self._entries) if self.active else 0

    def overdue(self) -> tuple[Key, float] | None:
        """The object whose pass has been due the longest, and for how many seconds.

        None when no pass is overdue or the keeper stands by. A pass that is
        due stays overdue while it waits for a worker and while it runs.
        """
        if not self.active:
            return None
        now = self._clock()
        late = [
            ((now - entry.due_at).total_seconds(), key)
            for key, entry in self._entries.items()
            if entry.due_at is not None and entry.due_at < now
        ]
        if not late:
            return None
        seconds, key = max(late)
        return key, seconds

    def _cancel(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
        self._observer.forget(*key)

    async def _run(self, key: Key, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._active.wait()
            entry.kicked.clear()
            entry.in_pass, entry.seen_during_pass = True, None
            try:
                next_at = await loop.run_in_executor(
                    self._pool, self._reconciler.reconcile, entry.body, entry.memory
                )
                entry.errors = 0
            except asyncio.CancelledError:
                raise
            except CredentialGone:
                logger.warning(
                    "[%s/%s] The ClientCredential is gone, though no deletion was "
                    "seen (the watch may have missed it); forgetting it.",
                    *key,
                )
                if self._entries.get(key) is entry:
                    self._cancel(key)
                return
            except KubeError as e:
                next_at = self._after_error(key, entry, str(e))
            except Exception as e:
                # A bug must not stop this object's timer, nor touch any other object.
                logger.exception(
                    "[%s/%s] Unexpected %s in a pass", *key, type(e).__name__
                )
                next_at = self._after_error(key, entry, None)
            finally:
                entry.in_pass = False
            seen = entry.seen_during_pass
            if seen is not None and seen != entry.memory.secret_version:
                entry.kicked.set()
            self._last_pass = self._clock()
            entry.due_at = next_at
            self._observer.reported(*key, entry.memory.status or {})

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


def _slim(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The body without managedFields, which no pass reads.

    Held for every object between passes, they were about half of a body's
    memory (the spec's and the status's field trees).
    """
    meta = body.get("metadata") or {}
    if "managedFields" not in meta:
        return body
    slim_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    return {**body, "metadata": slim_meta}


def _wants(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What about an object calls for a pass; status writes (ours) do not."""
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    return meta.get("generation"), annotations.get(REFRESH_REQUESTED_ANNOTATION)


def _client_secret_name(body: Mapping[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("clientSecretRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) else None
