"""The real Keycloak that tests under tests/keycloak share.

One server per test session: a start costs most of a minute on two cores, and the
tests that change a client secret put it back. A missing distribution fails the
session with the command that fetches it; it never skips, so a machine that
cannot run Keycloak cannot pass for one that did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.keycloak import Keycloak, KeycloakError


@pytest.fixture(scope="session")
def keycloak() -> Iterator[Keycloak]:
    server = Keycloak()
    try:
        server.start()
    except KeycloakError as error:
        pytest.fail(str(error), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def restore_demo_secret(keycloak: Keycloak) -> Iterator[None]:
    """Put the demo client's secret back after a test that changes it."""
    original = keycloak.client_secret
    yield
    keycloak.set_client_secret(keycloak.client_id, original)
