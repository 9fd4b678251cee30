"""HTTP sessions for token endpoints whose exchanges end at a wall-clock deadline.

``requests`` bounds each socket operation (connect, every read), not a whole
exchange: a server that sends one byte just inside the read timeout, in its
status line, headers or body, holds the calling thread for as long as it
likes (a TLS handshake CPython bounds as a whole by the connect timeout). The
keeper's worker threads are few and shared by every object, so a handful of
such endpoints would stall every refresh.

This module owns that bound. Sessions from ``new_session`` open connections
that enrol their socket with the calling thread's ``Deadline``; when it
passes, the Deadline shuts those sockets down, which wakes the blocked read
with an error that the caller reports as a timeout. Sessions also keep no
cookies and ignore proxy and netrc settings from the environment, since one
session serves every object and namespace that share a worker thread, and
never work out where a redirect leads: they are not followed.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Deadline:
    """Cuts the current thread's exchanges off once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def enrol(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down when the deadline passes."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:  # the exchange ended as the timer fired
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _end(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            self._sockets.clear()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every exchange this thread makes inside the block to ``seconds``."""
    watch = Deadline(seconds)
    outer = getattr(_current, "deadline", None)
    _current.deadline = watch
    watch._timer.start()
    try:
        yield watch
    finally:
        watch._end()
        _current.deadline = outer


def new_session() -> requests.Session:
    """A session for token requests: deadline-aware, cookie-free, no env proxies."""
    session = _Session()
    session.trust_env = False
    session.cookies.set_policy(_NoCookies())
    adapter = _Adapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for TLS sockets: it wakes a thread
    # blocked in a read on it, where SSLSocket.shutdown would first tear down
    # the TLS state under that thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _enrol(sock: socket.socket | None) -> None:
    watch: Deadline | None = getattr(_current, "deadline", None)
    if watch is not None:
        watch.enrol(sock)


class _EnrollingConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        # Plain http sends the request on this very socket. For https it is
        # detached when wrapped; CPython bounds the whole TLS handshake by the
        # socket's timeout (the connect timeout), and ``request`` enrols the
        # wrapped socket.
        _enrol(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _enrol(self.sock)  # a kept-alive connection, reused
        super().request(*args, **kwargs)


class _EnrollingHTTPSConnection(_EnrollingConnection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _EnrollingConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _EnrollingHTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}


class _Session(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> None:
        # Redirects are never followed, and requests would still decode a
        # Location header as UTF-8 to prepare the next hop, raising
        # UnicodeDecodeError on a hostile one. Callers read 3xx themselves.
        return None


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False
