"""When managed Secrets get and change their tokens, as a watch sees it.

One thread per namespace holds a watch on the Secrets labelled as access
tokens and notes, with the time each event arrived: when a Secret first
holds a token, and, each time its token is replaced, how long the replaced
token still had to live (its ``tokenkeeper.dev/expires-at`` annotation,
which is to the second, minus the wall clock at the event). Times come from
the watch rather than from polling, so they are as exact as event delivery
(a few milliseconds on loopback) and cost the API server one request.

Events are read as raw JSON lines: the client's model classes would cost
more CPU than the operator under test at 10,000 Secrets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import kubernetes

SELECTOR = "tokenkeeper.dev/secret=access-token"
EXPIRES_AT_ANNOTATION = "tokenkeeper.dev/expires-at"
RECONNECT_SECONDS = 1800


@dataclasses.dataclass
class _Held:
    token: str
    expires_at: float | None
    """Epoch seconds."""


@dataclasses.dataclass(frozen=True)
class Replacement:
    at: float
    """time.monotonic() when the event arrived."""
    remaining: float
    """Seconds the replaced token still had to live (negative: it had lapsed)."""


class SecretWatch:
    """A running watch on one namespace's managed Secrets; stop() ends it."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        self._core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self._changed = threading.Condition()
        self._held: dict[str, _Held] = {}
        self._first: dict[str, float] = {}
        self.replacements: list[Replacement] = []
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"watch {namespace}", daemon=True
        )

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        self._thread.join(timeout=10)

    # Reading what was seen.

    def first_token_at(self, name: str) -> float | None:
        with self._changed:
            return self._first.get(name)

    def with_token(self) -> int:
        with self._changed:
            return len(self._first)

    def wait_for_tokens(self, names: set[str], timeout: float) -> set[str]:
        """Wait until every named Secret holds a token; return those that do not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = names - self._first.keys()
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._changed.wait(min(left, 1.0))

    def replacements_between(self, start: float, end: float) -> list[Replacement]:
        with self._changed:
            return [r for r in self.replacements if start <= r.at < end]

    def lapsed_now(self) -> int:
        """Secrets whose current token has expired (to the second)."""
        now = time.time()
        with self._changed:
            return sum(
                1
                for held in self._held.values()
                if held.expires_at is not None and held.expires_at <= now
            )

    # The watch.

    def _run(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                version = self._watch(version)
            except Exception as e:  # reported; the watch resumes
                if self._stopping.is_set():
                    return
                self.errors.append(f"{type(e).__name__}: {e}"[:300])
                time.sleep(0.5)

    def _watch(self, version: str | None) -> str | None:
        self._response = self._core.list_namespaced_secret(
            self.namespace,
            label_selector=SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=RECONNECT_SECONDS,
            _preload_content=False,
        )
        for line in _lines(self._response):
            arrived, wall = time.monotonic(), time.time()
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                # 410 Gone: start again from a fresh list (synthetic ADDED events
                # of unchanged tokens count as nothing).
                return None
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind in ("ADDED", "MODIFIED"):
                self._seen(obj, arrived, wall)
            elif kind == "DELETED":
                with self._changed:
                    self._held.pop(obj["metadata"]["name"], None)
        return version

    def _seen(self, secret: dict[str, Any], arrived: float, wall: float) -> None:
        meta = secret["metadata"]
        name = meta["name"]
        token = (secret.get("data") or {}).get("access_token")
        if not token:
            return
        expires_at = _epoch((meta.get("annotations") or {}).get(EXPIRES_AT_ANNOTATION))
        with self._changed:
            held = self._held.get(name)
            if held is not None and held.token != token:
                remaining = (
                    held.expires_at - wall if held.expires_at is not None else 0.0
                )
                self.replacements.append(Replacement(arrived, remaining))
            self._held[name] = _Held(token, expires_at)
            if name not in self._first:
                self._first[name] = arrived
                self._changed.notify_all()


def _lines(response: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line)


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
