"""The wiring into kopf: watch handlers feed the keeper; nothing else happens here.

Only ``on.event`` handlers are used. They add no finalizer, keep no progress in
the object, and see the initial listing at start-up, so a restarted operator
resumes every object from what the cluster holds. Secrets are watched with a
server-side label selector, so the operator never lists or caches Secrets
that are not labelled for it.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import load_configuration
from tokenkeeper.target import (
    GROUP,
    PLURAL,
    ROLE_ACCESS_TOKEN,
    ROLE_CLIENT_SECRET,
    SECRET_ROLE_LABEL,
    VERSION,
)

SECRET_SELECTOR = f"{SECRET_ROLE_LABEL} in ({ROLE_ACCESS_TOKEN},{ROLE_CLIENT_SECRET})"
STALL_LIMIT = datetime.timedelta(minutes=15)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.label_selectors["v1", "secrets"] = SECRET_SELECTOR
    settings.posting.loggers = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=GROUP
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf connects exactly as the worker threads do: in-cluster, or --kubeconfig."""
    configuration = load_configuration(memo.get("kubeconfig"))
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.cleanup()
async def stop_keeper(memo: kopf.Memo, **_: Any) -> None:
    keeper: Keeper = memo["keeper"]
    await keeper.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def credential_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    keeper: Keeper = memo["keeper"]
    body = event["object"]
    if event["type"] == "DELETED":
        keeper.remove(body)
    else:
        keeper.upsert(body)


@kopf.on.event("v1", "secrets")
async def secret_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    keeper: Keeper = memo["keeper"]
    keeper.secret_changed(event["type"], event["object"])


@kopf.on.probe(id="objects")
async def objects_served(memo: kopf.Memo, **_: Any) -> int:
    keeper: Keeper = memo["keeper"]
    return len(keeper)
