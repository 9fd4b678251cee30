"""/metrics of a running operator: per-object series that follow the object, counters.

The operator runs as its ServiceAccount against the real API server with
``--metrics-port``; the token endpoint is the loopback token server.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tokenkeeper.status import parse_rfc3339

from devenv.runner import free_port
from devenv.tokenserver import TokenServer, server_error
from tests.cluster import CLIENT_SECRET, Cluster, basic_spec, wait_for
from tests.operations.conftest import StartOperator, sample, scrape


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    condition = cluster.condition(namespace, name, "Ready")
    return bool(condition and condition["status"] == "True")


def test_metrics_follow_a_clientcredential_from_creation_to_deletion(
    cluster: Cluster, namespace: str, token_server: TokenServer, solo: StartOperator
) -> None:
    port = free_port()
    # Only this namespace: objects other tests left behind must not count.
    solo(f"--metrics-port={port}", f"--namespace={namespace}")
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    status = cluster.credential(namespace, "billing")["status"]
    token = cluster.token(namespace, "billing")
    labels = {"namespace": namespace, "name": "billing"}
    host = token_server.url.removeprefix("http://")

    text = wait_for(
        lambda: (
            (t := scrape(port)) and sample(t, "tokenkeeper_ready", **labels) == 1 and t
        )
    )

    expires_at = parse_rfc3339(status["expiresAt"])
    refresh_at = parse_rfc3339(status["refreshAt"])
    assert expires_at is not None
    assert refresh_at is not None
    assert (
        sample(text, "tokenkeeper_token_expiry_timestamp_seconds", **labels)
        == expires_at.timestamp()
    )
    assert (
        sample(text, "tokenkeeper_token_next_refresh_timestamp_seconds", **labels)
        == refresh_at.timestamp()
    )
    assert sample(text, "tokenkeeper_refresh_failures", **labels) == 0
    assert (
        sample(
            text,
            "tokenkeeper_token_requests_total",
            result="success",
            reason="TokenIssued",
        )
        == 1
    )
    assert (
        sample(text, "tokenkeeper_token_request_duration_seconds_count", host=host) == 1
    )
    assert sample(text, "tokenkeeper_managed_objects") == 1
    assert sample(text, "tokenkeeper_active") == 1
    assert sample(text, "process_resident_memory_bytes") is not None
    assert token
    assert token not in text
    assert CLIENT_SECRET not in text

    cluster.delete_credential(namespace, "billing")

    after = wait_for(
        lambda: (
            (t := scrape(port)) and sample(t, "tokenkeeper_managed_objects") == 0 and t
        )
    )
    assert f'namespace="{namespace}"' not in after


def test_failing_requests_are_counted_by_reason_and_failures_in_a_row_shown(
    cluster: Cluster, namespace: str, token_server: TokenServer, solo: StartOperator
) -> None:
    port = free_port()
    # Only this namespace: objects other tests left behind must not count.
    solo(f"--metrics-port={port}", f"--namespace={namespace}")
    token_server.set_default(server_error(503))
    cluster.create_client_secret(namespace)
    labels = {"namespace": namespace, "name": "billing"}

    cluster.create_credential(namespace, "billing", basic_spec(token_server))

    text = wait_for(
        lambda: (
            (t := scrape(port))
            and (sample(t, "tokenkeeper_refresh_failures", **labels) or 0) >= 2
            and t
        ),
        timeout=30,
    )
    assert (
        sample(
            text,
            "tokenkeeper_token_requests_total",
            result="failure",
            reason="ServerError",
        )
        or 0
    ) >= 2
    assert sample(text, "tokenkeeper_ready", **labels) == 0
    assert sample(text, "tokenkeeper_token_expiry_timestamp_seconds", **labels) is None
    retry_at = sample(
        text, "tokenkeeper_token_next_refresh_timestamp_seconds", **labels
    )
    assert retry_at is not None
    assert retry_at > datetime.now(UTC).timestamp() - 5
