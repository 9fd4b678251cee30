"""The outbound guard's verdicts on URLs, with a fixed resolver instead of DNS."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tokenkeeper.guard import OutboundGuard, URLNotAllowed

NAMES = {
    "sso.example.com": ["203.0.113.7"],
    "rebound.example.com": ["169.254.169.254"],
    "v6-link-local.example.com": ["fe80::1%eth0"],
    "dual.example.com": ["203.0.113.8", "169.254.10.10"],
    "localhost": ["127.0.0.1", "::1"],
}


def resolver(host: str) -> Sequence[str]:
    return NAMES.get(host, [])


def guard(**settings: object) -> OutboundGuard:
    return OutboundGuard(resolver=resolver, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "https://sso.example.com/realms/acme/protocol/openid-connect/token",
        "https://SSO.Example.COM:8443/token",
        "https://203.0.113.7/token",
        "https://[2001:db8::1]/token",
        "https://unresolvable.example.com/token",
        "https://sso.example.com/token?client=1#frag",
    ],
)
def test_https_to_a_public_host_is_allowed_by_default(url: str) -> None:
    guard().check(url, "spec.tokenURL")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://sso.example.com/token", "uses plain http"),
        ("ftp://sso.example.com/token", "must be an absolute https URL"),
        ("sso.example.com/token", "must be an absolute https URL"),
        ("https:///token", "must be an absolute https URL"),
        ("https://user:pass@sso.example.com/token", "must not carry credentials"),
        ("https://user@sso.example.com/token", "must not carry credentials"),
        ("https://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("https://169.254.170.2/v2/credentials", "link-local or cloud metadata"),
        ("https://100.100.100.200/latest/meta-data/", "link-local or cloud metadata"),
        ("https://[fd00:ec2::254]/latest/", "link-local or cloud metadata"),
        ("https://[fe80::1]/token", "link-local or cloud metadata"),
        ("https://[::ffff:169.254.169.254]/token", "link-local or cloud metadata"),
        ("https://[::ffff:a9fe:a9fe]/token", "link-local or cloud metadata"),
        ("https://[::ffff:100.100.100.200]/token", "link-local or cloud metadata"),
        ("https://169.254.1.1/token", "link-local or cloud metadata"),
        ("https://metadata.google.internal/token", "cloud metadata service"),
        ("https://METADATA/token", "cloud metadata service"),
        ("https://rebound.example.com/token", "resolves to 169.254.169.254"),
        ("https://v6-link-local.example.com/token", "resolves to fe80::1"),
        ("https://dual.example.com/token", "resolves to 169.254.10.10"),
    ],
)
def test_unsafe_urls_are_refused_by_default_with_the_reason(
    url: str, says: str
) -> None:
    with pytest.raises(URLNotAllowed) as refused:
        guard().check(url, "spec.tokenURL")

    assert says in str(refused.value)
    assert str(refused.value).startswith("spec.tokenURL ")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/token", True),
        ("http://localhost/token", True),
        ("http://[::1]:9000/token", True),
        ("http://sso.example.com/token", False),
        ("http://127.0.0.2/token", False),
    ],
)
def test_plain_http_only_for_the_listed_hosts(url: str, allowed: bool) -> None:
    loopback = guard(plain_http_hosts=("127.0.0.1", "localhost", "::1"))

    if allowed:
        loopback.check(url, "spec.tokenURL")
    else:
        with pytest.raises(URLNotAllowed, match="plain http"):
            loopback.check(url, "spec.tokenURL")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("sso.example.com", True),
        ("login.sso.example.com", True),
        ("keycloak.corp.test", True),
        ("example.com", False),
        ("sso.example.com.evil.test", False),
        ("evil-sso.example.com", False),
        ("203.0.113.7", False),
    ],
)
def test_allowed_hosts_patterns_match_whole_host_names(
    host: str, allowed: bool
) -> None:
    narrow = guard(
        allowed_hosts=("sso.example.com", "*.sso.example.com", "*.corp.test")
    )
    url = f"https://{host}/token"

    if allowed:
        narrow.check(url, "spec.tokenURL")
    else:
        with pytest.raises(URLNotAllowed, match="--allowed-hosts"):
            narrow.check(url, "spec.tokenURL")


def test_an_allowed_host_pattern_does_not_admit_link_local_addresses() -> None:
    anything = guard(allowed_hosts=("*",), plain_http_hosts=("*",))

    with pytest.raises(URLNotAllowed, match="link-local"):
        anything.check("http://169.254.169.254/", "spec.tokenURL")


def test_link_local_can_be_allowed_explicitly() -> None:
    permissive = guard(allow_link_local=True)

    permissive.check("https://169.254.169.254/token", "spec.tokenURL")
    permissive.check("https://metadata.google.internal/token", "spec.tokenURL")


def test_the_message_names_the_field_that_holds_the_url() -> None:
    with pytest.raises(URLNotAllowed) as refused:
        guard().check("http://sso.example.com/token", "the discovered token_endpoint")

    assert str(refused.value).startswith("the discovered token_endpoint uses plain")


@pytest.mark.parametrize("pattern", ["::1", "[::1]"])
def test_an_ipv6_host_may_be_listed_with_or_without_brackets(pattern: str) -> None:
    loopback = guard(plain_http_hosts=(pattern,), allowed_hosts=(pattern,))

    loopback.check("http://[::1]:9000/token", "spec.tokenURL")
