"""429 and 503 with Retry-After: the operator waits as long as the server asks.

The token server answers the first request with a throttling reply; the test
measures, on the server's own clock, when the next request arrives. Retry-After
comes as delta-seconds and as an HTTP date (RFC 9110 section 10.2.3).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest

from devenv.tokenserver import TokenServer, throttled
from tests.cluster import Cluster, basic_spec
from tests.hostile.conftest import wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")

ASKED_SECONDS = 3


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_no_request_comes_before_the_time_retry_after_asks_for(
    cluster: Cluster, namespace: str, token_server: TokenServer, status: int, form: str
) -> None:
    if form == "seconds":
        token_server.script(throttled(ASKED_SECONDS, status=status))
    else:
        # HTTP dates have whole seconds; ask for a whole second well ahead.
        not_before = math.ceil(time.time()) + ASKED_SECONDS + 1
        when = datetime.fromtimestamp(not_before, UTC)
        token_server.script(throttled(when, status=status))
    cluster.create_client_secret(namespace)

    cluster.create_credential(namespace, "billing", basic_spec(token_server))

    condition = wait_condition(
        cluster, namespace, "billing", "Refreshed", status="False", reason="RateLimited"
    )
    wait_ready(cluster, namespace, "billing", timeout=ASKED_SECONDS + 15)
    first, second = token_server.requests[:2]
    if form == "seconds":
        not_before = first.time + ASKED_SECONDS
    assert second.time >= not_before, f"{not_before - second.time:.3f} s early"
    assert second.time <= not_before + 3, "waited far longer than asked"
    assert f"HTTP {status}" in condition["message"]
    assert "as asked" in condition["message"]
    assert token_server.count("/token") == 2
