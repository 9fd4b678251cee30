"""The Kubernetes calls a reconcile pass makes, as plain dicts, from worker threads.

kopf owns the watches; this module owns the reads and writes that a pass makes
on its own: one named Secret or ConfigMap at a time, the managed Secret, the
status subresource and Events; and the peering object that ``peering`` reads
and creates. It uses the official client without model
classes (raw JSON in and out), which keeps bodies in the same shape as kopf's
and avoids the cost of the generated models.

API errors become ``KubeError``; its text names the call and the HTTP status,
never the response body, which for Secrets could hold data.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tokenkeeper.status import rfc3339
from tokenkeeper.target import GROUP, KIND, PLURAL, VERSION

COMPONENT = "tokenkeeper"
PEERING = ("kopf.dev", "v1", "clusterkopfpeerings")


class KubeError(Exception):
    """A Kubernetes API call failed; ``str()`` is safe to log.

    The API server's own explanation (a Status object's reason and message,
    e.g. an RBAC denial naming the verb and resource) is kept; it describes
    the request, not the contents of any Secret.
    """

    def __init__(self, call: str, status: int | None, explanation: str = "") -> None:
        said = f": {explanation}" if explanation else ""
        super().__init__(f"Kubernetes API call {call} failed with HTTP {status}{said}")
        self.status = status


class Conflict(KubeError):
    """The object changed or already exists (HTTP 409)."""


class NotFound(KubeError):
    """The object does not exist (HTTP 404)."""


class Kube:
    """The calls reconcile needs, on one shared, thread-safe API client."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._instance = socket.gethostname()

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            f"GET secret {namespace}/{name}",
            self._core.read_namespaced_secret,
            name,
            namespace,
        )

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            f"GET configmap {namespace}/{name}",
            self._core.read_namespaced_config_map,
            name,
            namespace,
        )

    def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return _call(
            f"POST secret {namespace}/{body['metadata']['name']}",
            self._core.create_namespaced_secret,
            namespace,
            body,
        )

    def replace_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return _call(
            f"PUT secret {namespace}/{name}",
            self._core.replace_namespaced_secret,
            name,
            namespace,
            body,
        )

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return _call(
            f"PATCH clientcredential {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )

    def credential_uid(self, namespace: str, name: str) -> str | None:
        """The uid of a ClientCredential, or None if there is none by that name.

        A list with a field selector, not a GET: list is the verb kopf's watch
        already needs, and the RBAC grants no more.
        """
        found = _call(
            f"LIST clientcredentials {namespace}/{name}",
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
        )
        items = found.get("items") or []
        return str(items[0]["metadata"]["uid"]) if items else None

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """Record a core/v1 Event on a ClientCredential, as kubectl describe shows."""
        meta = involved["metadata"]
        now = datetime.now(UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": rfc3339(now),
            "lastTimestamp": rfc3339(now),
            "count": 1,
        }
        _call(
            f"POST event {meta['namespace']}/{meta['name']}",
            self._core.create_namespaced_event,
            meta["namespace"],
            body,
        )

    def get_peering(self, name: str, timeout: float) -> dict[str, Any] | None:
        return self._get(
            f"GET clusterkopfpeering {name}",
            self._custom.get_cluster_custom_object,
            *PEERING,
            name,
            timeout=timeout,
        )

    def create_peering(self, name: str) -> dict[str, Any]:
        body = {
            "apiVersion": f"{PEERING[0]}/{PEERING[1]}",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        return _call(
            f"POST clusterkopfpeering {name}",
            self._custom.create_cluster_custom_object,
            *PEERING,
            body,
        )

    def _get(
        self, call: str, method: Any, *args: Any, timeout: float | None = None
    ) -> dict[str, Any] | None:
        try:
            return _call(call, method, *args, timeout=timeout)
        except KubeError as e:
            if e.status == 404:
                return None
            raise


def _call(
    call: str, method: Any, *args: Any, timeout: float | None = None, **kwargs: Any
) -> dict[str, Any]:
    try:
        response = method(
            *args, _preload_content=False, _request_timeout=timeout, **kwargs
        )
    except ApiException as e:
        error = {409: Conflict, 404: NotFound}.get(e.status or 0, KubeError)
        raise error(call, e.status, _explanation(e.body)) from None
    except OSError as e:
        raise KubeError(call, None) from e
    body: dict[str, Any] = json.loads(response.data)
    return body


def _explanation(body: object) -> str:
    """Reason and message of a Status object, shortened; nothing if it is not one."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return ""
    if not isinstance(status, dict) or status.get("kind") != "Status":
        return ""
    text = f"{status.get('reason', '')} ({status.get('message', '')})"
    return text[:300]


def load_configuration(
    kubeconfig: str | None = None,
) -> kubernetes.client.Configuration:
    """Client settings from in-cluster config, else the kubeconfig (or $KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ.get("KUBECONFIG"),
            client_configuration=configuration,
        )
    return configuration


def api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """An API client pooled for the worker threads."""
    configuration = load_configuration(kubeconfig)
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)
