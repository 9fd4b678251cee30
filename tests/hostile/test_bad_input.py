"""Bad ClientCredentials: refused at kubectl apply where the schema can tell, else
reported as a condition that names the problem, and never a drag on others.

The schema cases go through ``kubectl apply`` as a person would and read its
stderr, so the wording people see is what is tested. The other cases pass the
schema and must end as a specific reason with no token request sent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devenv.tokenserver import TokenServer, delayed
from tests.cluster import GROUP, VERSION, Cluster, basic_spec
from tests.hostile.conftest import StartOperator, wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")

VALID_SPEC: dict[str, Any] = {
    "tokenURL": "https://sso.example.com/realms/acme/protocol/openid-connect/token",
    "clientID": "billing-app",
    "clientSecretRef": {"name": "client"},
}

SCHEMA_ERRORS = [
    pytest.param(
        {"issuerURL": "https://sso.example.com/realms/acme"},
        "set exactly one of tokenURL and issuerURL",
        id="both-urls",
    ),
    pytest.param(
        {"tokenURL": None}, "set exactly one of tokenURL and issuerURL", id="no-url"
    ),
    pytest.param(
        {"extraParams": {"grant_type": "password"}},
        "may not set grant_type, client_id or client_secret",
        id="extra-grant-type",
    ),
    pytest.param(
        {"extraParams": {"client_secret": "x"}},
        "may not set grant_type, client_id or client_secret",
        id="extra-client-secret",
    ),
    pytest.param(
        {"refreshBeforeSeconds": 60, "refreshBeforePercentage": 30},
        "set at most one of refreshBeforeSeconds and refreshBeforePercentage",
        id="both-refresh-fields",
    ),
    pytest.param(
        {"authMethod": "private_key_jwt"},
        'spec.authMethod: Unsupported value: "private_key_jwt"',
        id="auth-method",
    ),
    pytest.param(
        {"refreshBeforePercentage": 95},
        "spec.refreshBeforePercentage: Invalid value: 95: "
        "spec.refreshBeforePercentage in body should be less than or equal to 90",
        id="percentage-95",
    ),
    pytest.param(
        {"tokenURL": "sso.example.com/token"},
        'spec.tokenURL: Invalid value: "sso.example.com/token": must be an absolute '
        "https URL",
        id="token-url-not-a-url",
    ),
    pytest.param(
        {"tokenURL": "ftp://sso.example.com/token"},
        "must be an absolute https URL",
        id="token-url-ftp",
    ),
    pytest.param(
        {"tokenURL": None, "issuerURL": "not a url"},
        'spec.issuerURL: Invalid value: "not a url": must be an absolute https URL',
        id="issuer-url-not-a-url",
    ),
    pytest.param(
        {"scopes": ["read write"]}, "spec.scopes[0] in body should match", id="scope"
    ),
    pytest.param(
        {"clientSecretRef": None}, "spec.clientSecretRef: Required value", id="no-ref"
    ),
    pytest.param(
        {"secretTemplate": {"labels": {"team": "billing team"}}},
        "spec.secretTemplate.labels.team in body should match",
        id="label-value",
    ),
]


@pytest.mark.parametrize(("change", "says"), SCHEMA_ERRORS)
def test_kubectl_apply_refuses_an_invalid_spec_with_a_clear_message(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    change: dict[str, Any],
    says: str,
) -> None:
    spec = {k: v for k, v in {**VALID_SPEC, **change}.items() if v is not None}
    manifest = tmp_path / "bad.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ClientCredential",
                "metadata": {"name": "bad", "namespace": namespace},
                "spec": spec,
            }
        )
    )

    with pytest.raises(subprocess.CalledProcessError) as refused:
        cluster.kubectl("apply", "-f", str(manifest))

    stderr = refused.value.stderr
    assert 'The ClientCredential "bad" is invalid' in stderr
    assert says in stderr


def test_the_valid_spec_used_above_is_accepted(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "good.json"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClientCredential",
        "metadata": {"name": "good", "namespace": namespace},
        "spec": VALID_SPEC,
    }
    manifest.write_text(json.dumps(body))

    output = cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest))

    assert "clientcredential.tokenkeeper.dev/good created (server dry run)" in output


def _userinfo_url(server: TokenServer) -> str:
    return server.token_url.replace("http://", "http://user:password@")


UNUSABLE = [
    pytest.param(
        lambda server: {"tokenURL": _userinfo_url(server)},
        "URLNotAllowed",
        "must not carry credentials; use spec.clientSecretRef",
        id="credentials-in-url",
    ),
    pytest.param(
        lambda server: {"tokenURL": "http://sso.example.com/token"},
        "URLNotAllowed",
        "uses plain http, which would send the client secret unencrypted",
        id="plain-http",
    ),
    pytest.param(
        lambda server: {"caBundleRef": {"name": "missing"}},
        "CABundleNotFound",
        "key ca.crt of ConfigMap missing (spec.caBundleRef)",
        id="ca-bundle-missing",
    ),
    pytest.param(
        lambda server: {"caBundleRef": {"name": "not-pem", "key": "ca.crt"}},
        "CABundleNotFound",
        "holds no PEM certificate",
        id="ca-bundle-not-pem",
    ),
    pytest.param(
        lambda server: {"secretTemplate": {"labels": {"team/a/b": "x"}}},
        "InvalidSpec",
        "spec.secretTemplate.labels key 'team/a/b' is not a valid kubernetes key",
        id="label-key",
    ),
]


@pytest.mark.parametrize(("change", "reason", "says"), UNUSABLE)
def test_what_the_schema_cannot_catch_becomes_a_specific_condition(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    change: Any,
    reason: str,
    says: str,
) -> None:
    cluster.create_client_secret(namespace)
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "not-pem"}, "data": {"ca.crt": "hello"}}
    )

    cluster.create_credential(
        namespace, "billing", basic_spec(token_server, **change(token_server))
    )

    refreshed = wait_condition(
        cluster, namespace, "billing", "Refreshed", status="False", reason=reason
    )
    ready = cluster.condition(namespace, "billing", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert says.lower() in refreshed["message"].lower()
    assert token_server.count() == 0


def _no_secret(cluster: Cluster, namespace: str) -> None:
    pass


def _wrong_key(cluster: Cluster, namespace: str) -> None:
    cluster.create_client_secret(namespace, key="password")


def _empty_value(cluster: Cluster, namespace: str) -> None:
    cluster.create_client_secret(namespace, value="")


def _create(cluster: Cluster, namespace: str) -> None:
    cluster.create_client_secret(namespace)


def _set(cluster: Cluster, namespace: str) -> None:
    cluster.set_client_secret(namespace, "client", "canary-client-secret-7Hq2")


@pytest.mark.parametrize(
    ("arrange", "says", "mend"),
    [
        pytest.param(_no_secret, "Secret client (spec", _create, id="no-secret"),
        pytest.param(
            _wrong_key, "key client-secret of Secret client", _set, id="no-key"
        ),
        pytest.param(
            _empty_value, "key client-secret of Secret client", _set, id="empty"
        ),
    ],
)
def test_a_missing_client_secret_is_reported_and_used_as_soon_as_it_appears(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    arrange: Any,
    says: str,
    mend: Any,
) -> None:
    arrange(cluster, namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    missing = wait_condition(
        cluster, namespace, "billing", "Ready", reason="ClientSecretNotFound"
    )

    mend(cluster, namespace)

    # The first retry after a local problem is 5 s away: only the watch on
    # the labelled Secret can bring the token sooner.
    wait_ready(cluster, namespace, "billing", timeout=3)
    assert says.lower() in missing["message"].lower()
    assert f"in namespace {namespace}" in missing["message"]
    assert token_server.count("/token") == 1


def test_broken_objects_do_not_delay_a_good_one(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    with TokenServer() as stalling:
        stalling.set_default(delayed(60))
        for n in range(3):
            spec = basic_spec(stalling)
            cluster.create_credential(namespace, f"stalled-{n}", spec)
        cluster.create_credential(
            namespace,
            "no-secret",
            basic_spec(token_server, clientSecretRef={"name": "x"}),
        )
        cluster.create_credential(
            namespace, "no-ca", basic_spec(token_server, caBundleRef={"name": "x"})
        )
        stalling.wait_for_requests(3, timeout=10)

        cluster.create_credential(namespace, "good", basic_spec(token_server))

        wait_ready(cluster, namespace, "good", timeout=3)
        assert stalling.count() == 3


def test_a_refusal_mended_outside_the_spec_clears_without_a_new_token(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    solo_operator: StartOperator,
) -> None:
    cluster.create_client_secret(namespace)
    first = solo_operator(f"--namespace={namespace}", log_name="first.log")
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    token = wait_ready(cluster, namespace, "billing")
    first.stop()
    strict = solo_operator(
        f"--namespace={namespace}",
        "--allowed-hosts=sso.example.test",
        log_name="strict.log",
    )
    wait_condition(
        cluster,
        namespace,
        "billing",
        "Refreshed",
        status="False",
        reason="URLNotAllowed",
    )
    strict.stop()
    asked = token_server.count("/token")

    solo_operator(f"--namespace={namespace}", log_name="mended.log")

    refreshed = wait_condition(
        cluster, namespace, "billing", "Refreshed", status="True", timeout=15
    )
    assert "resolved" in refreshed["message"]
    assert cluster.credential(namespace, "billing")["status"]["failedAttempts"] == 0
    assert token_server.count("/token") == asked
    assert cluster.token(namespace, "billing") == token
