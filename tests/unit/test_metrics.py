"""Metrics: what each observer call records, and that no secret reaches a label."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from tokenkeeper import reasons
from tokenkeeper.endpoint import TokenError
from tokenkeeper.metrics import Metrics, endpoint_host
from tokenkeeper.spec import Ref, RefreshPolicy, Spec

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SECRET = "canary-client-secret-7Hq2"


def spec(url: str = "https://sso.example.com/realms/a/token") -> Spec:
    return Spec(
        token_url=url,
        issuer_url=None,
        client_id="billing",
        client_secret_ref=Ref("client", "client-secret"),
        auth_method="client_secret_post",
        scopes=(),
        audience=None,
        extra_params={},
        secret_name="billing",
        secret_template={},
        refresh=RefreshPolicy(),
        ca_bundle_ref=None,
    )


def sample(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


def status(ready: str = "True", failures: int = 0) -> dict:
    return {
        "expiresAt": "2026-12-03T12:05:00Z",
        "refreshAt": "2026-12-03T12:03:00Z",
        "failedAttempts": failures,
        "conditions": [{"type": "Ready", "status": ready}],
    }


def test_a_successful_request_is_counted_timed_and_its_lag_observed() -> None:
    metrics = Metrics()

    with metrics.token_request(spec(), T0, T0 + timedelta(seconds=2)):
        pass

    assert (
        sample(
            metrics,
            "tokenkeeper_token_requests_total",
            result="success",
            reason=reasons.TOKEN_ISSUED,
        )
        == 1
    )
    assert (
        sample(
            metrics,
            "tokenkeeper_token_request_duration_seconds_count",
            host="sso.example.com",
        )
        == 1
    )
    assert sample(metrics, "tokenkeeper_refresh_lag_seconds_sum") == 2
    assert sample(metrics, "tokenkeeper_refresh_lag_seconds_count") == 1


def test_a_failed_request_is_counted_by_its_reason_and_still_raises() -> None:
    metrics = Metrics()

    with (
        pytest.raises(TokenError),
        metrics.token_request(spec(), None, T0),
    ):
        raise TokenError(reasons.TIMEOUT, "no answer")

    assert (
        sample(
            metrics,
            "tokenkeeper_token_requests_total",
            result="failure",
            reason=reasons.TIMEOUT,
        )
        == 1
    )
    assert sample(metrics, "tokenkeeper_refresh_lag_seconds_count") == 0


def test_an_unexpected_exception_is_counted_as_an_internal_error() -> None:
    metrics = Metrics()

    with pytest.raises(KeyError), metrics.token_request(spec(), None, T0):
        raise KeyError("bug")

    assert (
        sample(
            metrics,
            "tokenkeeper_token_requests_total",
            result="error",
            reason="InternalError",
        )
        == 1
    )


def test_status_becomes_per_object_gauges_and_forget_removes_them() -> None:
    metrics = Metrics()
    labels = {"namespace": "billing", "name": "api"}

    metrics.reported("billing", "api", status(failures=2))

    assert (
        sample(metrics, "tokenkeeper_token_expiry_timestamp_seconds", **labels)
        == datetime(2026, 12, 3, 12, 5, tzinfo=UTC).timestamp()
    )
    assert (
        sample(metrics, "tokenkeeper_token_next_refresh_timestamp_seconds", **labels)
        == datetime(2026, 12, 3, 12, 3, tzinfo=UTC).timestamp()
    )
    assert sample(metrics, "tokenkeeper_ready", **labels) == 1
    assert sample(metrics, "tokenkeeper_refresh_failures", **labels) == 2

    metrics.forget("billing", "api")

    exposed = generate_latest(metrics.registry).decode()
    assert 'name="api"' not in exposed


@pytest.mark.parametrize("ready", ["False", "Unknown"])
def test_ready_is_zero_unless_the_condition_is_true(ready: str) -> None:
    metrics = Metrics()

    metrics.reported("billing", "api", status(ready=ready))

    assert sample(metrics, "tokenkeeper_ready", namespace="billing", name="api") == 0


def test_an_object_without_a_token_exports_no_expiry() -> None:
    metrics = Metrics()
    metrics.reported("billing", "api", status())

    metrics.reported("billing", "api", {"failedAttempts": 1, "conditions": []})

    assert (
        sample(
            metrics,
            "tokenkeeper_token_expiry_timestamp_seconds",
            namespace="billing",
            name="api",
        )
        is None
    )


def test_the_object_count_and_active_flag_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    state = {"objects": 3.0, "active": 1.0}
    metrics.watch(objects=lambda: state["objects"], active=lambda: state["active"])

    state.update(objects=0.0, active=0.0)

    assert sample(metrics, "tokenkeeper_managed_objects") == 0
    assert sample(metrics, "tokenkeeper_active") == 0


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (
            "https://sso.example.com/realms/a/protocol/openid-connect/token",
            "sso.example.com",
        ),
        ("http://127.0.0.1:8443/token?x=1", "127.0.0.1:8443"),
        (f"https://user:{SECRET}@idp.example/token", "idp.example"),
        ("https://[::1]:9000/token", "[::1]:9000"),
        ("not a url", "unknown"),
    ],
)
def test_the_host_label_is_host_and_port_only(url: str, host: str) -> None:
    assert endpoint_host(url) == host


def test_no_label_carries_a_credential_from_the_url() -> None:
    metrics = Metrics()

    with metrics.token_request(
        spec(f"https://client:{SECRET}@idp.example/token?client_secret={SECRET}"),
        None,
        T0,
    ):
        pass

    assert SECRET not in generate_latest(metrics.registry).decode()
