"""The outbound guard: which token-endpoint URLs the operator may send credentials to.

Anyone who can create a ClientCredential chooses where the operator sends a
client secret. The guard limits that before any request: only https (plain
http only for hosts the operator's admin lists), only hosts matching the
allowed patterns, and never link-local or cloud metadata addresses, which
would turn the operator into a way to read a node's instance credentials.

Names are resolved when checked; a resolver that answers differently later
(DNS rebinding) is outside what this guard covers, as the README says.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Sequence

_METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}
)
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)

Resolver = Callable[[str], Sequence[str]]


class URLNotAllowed(Exception):
    """The URL may not be used; ``str()`` says why, for a status condition."""


def resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclasses.dataclass(frozen=True)
class OutboundGuard:
    """Operator-wide rules for token-endpoint URLs (flags of ``tokenkeeper run``)."""

    allowed_hosts: tuple[str, ...] = ("*",)
    """fnmatch patterns for host names; ``*`` allows any public host."""
    plain_http_hosts: tuple[str, ...] = ()
    """Hosts (patterns) that may be reached over plain http, e.g. ``127.0.0.1``."""
    allow_link_local: bool = False
    resolver: Resolver = resolve

    def check(self, url: str, field: str) -> None:
        """Raise URLNotAllowed, naming ``field``, unless ``url`` may be used."""
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            raise URLNotAllowed(f"{field} must be an absolute https URL")
        if parts.username or parts.password:
            raise URLNotAllowed(
                f"{field} must not carry credentials; use spec.clientSecretRef"
            )
        if parts.scheme == "http" and not _matches(host, self.plain_http_hosts):
            raise URLNotAllowed(
                f"{field} uses plain http, which would send the client secret "
                f"unencrypted; use https (the operator allows http only for "
                f"{', '.join(self.plain_http_hosts) or 'no host'})"
            )
        if not _matches(host, self.allowed_hosts):
            raise URLNotAllowed(
                f"{field} names host {host}, which the operator's "
                "--allowed-hosts setting does not include"
            )
        if self.allow_link_local:
            return
        if host in _METADATA_HOSTS:
            raise URLNotAllowed(f"{field} names a cloud metadata service ({host})")
        for address in self._addresses(host):
            if _link_local_or_metadata(address):
                raise URLNotAllowed(
                    f"{field} resolves to {address}, a link-local or cloud "
                    "metadata address, which the operator refuses"
                )

    def _addresses(
        self, host: str
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        found = []
        for text in self.resolver(host):
            try:
                found.append(ipaddress.ip_address(text.split("%")[0]))
            except ValueError:
                continue
        return found


def _link_local_or_metadata(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> bool:
    # ::ffff:169.254.169.254 reaches the IPv4 address on a dual-stack host.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in _METADATA_ADDRESSES or address.is_link_local


def _matches(host: str, patterns: Sequence[str]) -> bool:
    # "[::1]" is how people write an IPv6 host, and to fnmatch a character class.
    return any(
        fnmatch.fnmatchcase(host, pattern.lower())
        or host == pattern.lower().strip("[]")
        for pattern in patterns
    )
