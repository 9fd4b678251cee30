"""A token endpoint fast enough that the operator, not the endpoint, is measured.

``devenv.tokenserver`` favours fidelity (a thread per connection, every
request recorded); under thousands of refreshes it would be the bottleneck
and its records would grow without bound. This server is a single asyncio
loop in its own process that answers the client-credentials grant over
HTTP/1.1 keep-alive and keeps only counters.

The lifetime of a token is chosen by the client id: ``bench-30`` gets
30-second tokens, ``bench-300`` 300-second ones (any ``-<seconds>`` suffix;
300 otherwise), so one endpoint serves every phase of a run. Tokens are
opaque random strings of ``--token-chars`` characters, about the size of a
Keycloak JWT by default, so Secrets and the operator's memory hold what
they would in production.

``GET /stats`` answers the number of token requests per client id.

    python -m benchmarks.fast_endpoint --client-secret S   # prints the token URL
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import secrets
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

TOKEN_PATH = "/token"
STATS_PATH = "/stats"
DEFAULT_LIFETIME = 300
DEFAULT_TOKEN_CHARS = 1024
MAX_BODY = 64 * 1024


class Endpoint:
    """The grant and the counters; one instance per server process."""

    def __init__(self, client_secret: str, token_chars: int) -> None:
        self._client_secret = client_secret
        self._token_bytes = max(token_chars * 3 // 4, 16)
        self.requests: collections.Counter[str] = collections.Counter()
        self.refused = 0

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        route = path.split("?", 1)[0]
        if route == STATS_PATH and method == "GET":
            return 200, {"requests": dict(self.requests), "refused": self.refused}
        if route != TOKEN_PATH or method != "POST":
            return 404, {"error": "not_found"}
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        client_id, secret = _credentials(headers.get("authorization"), form)
        if form.get("grant_type") != "client_credentials" or not client_id:
            self.refused += 1
            return 400, {"error": "invalid_request"}
        if secret != self._client_secret:
            self.refused += 1
            return 401, {"error": "invalid_client"}
        self.requests[client_id] += 1
        return 200, {
            "access_token": secrets.token_urlsafe(self._token_bytes),
            "token_type": "Bearer",
            "expires_in": _lifetime(client_id),
        }

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                length = min(int(headers.get("content-length") or 0), MAX_BODY)
                body = await reader.readexactly(length) if length else b""
                status, document = self.answer(method, path, headers, body)
                payload = json.dumps(document).encode()
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                    b"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n%s"
                    % (
                        status,
                        b"OK" if status == 200 else b"Error",
                        len(payload),
                        payload,
                    )
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        writer.close()


def _credentials(
    authorization: str | None, form: dict[str, str]
) -> tuple[str | None, str | None]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        decoded = base64.b64decode(encoded).decode()
        client_id, _, secret = decoded.partition(":")
        return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
    return form.get("client_id"), form.get("client_secret")


def _lifetime(client_id: str) -> int:
    suffix = client_id.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() and int(suffix) > 0 else DEFAULT_LIFETIME


async def _main(args: argparse.Namespace) -> None:
    endpoint = Endpoint(args.client_secret, args.token_chars)
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}{TOKEN_PATH}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fast_endpoint", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--client-secret", default=os.environ.get("BENCH_CLIENT_SECRET")
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-chars", type=int, default=DEFAULT_TOKEN_CHARS)
    args = parser.parse_args(argv)
    if not args.client_secret:
        parser.error("--client-secret or $BENCH_CLIENT_SECRET is required")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
