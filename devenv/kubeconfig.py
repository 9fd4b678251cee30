"""Reading and writing kubeconfig files for the local control plane.

Owns the kubeconfig format as far as devenv needs it: writing a one-cluster,
one-user file, and reading the cluster that a file's current context points at.
Credentials are embedded (`*-data` fields) rather than referenced by path, so a
kubeconfig can be copied anywhere and stays valid for as long as its plane runs.
Every file written here holds credentials and is created owner-only.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from devenv.pki import write_private

Cluster = dict[str, Any]


def write(path: Path, *, name: str, cluster: Cluster, user: dict[str, str]) -> Path:
    """Write a kubeconfig whose only context joins `cluster` and `user` as `name`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


def cluster_entry(server: str, ca_pem: bytes) -> Cluster:
    return {"server": server, "certificate-authority-data": _b64(ca_pem)}


def client_certificate_user(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    return {
        "client-certificate-data": _b64(cert_pem),
        "client-key-data": _b64(key_pem),
    }


def token_user(token: str) -> dict[str, str]:
    return {"token": token}


def current_cluster(path: Path) -> Cluster:
    """The cluster entry of the current context, with relative paths made absolute."""
    config = yaml.safe_load(path.read_text())
    context_name = config["current-context"]
    context = _named(config, "contexts", context_name)["context"]
    cluster = dict(_named(config, "clusters", context["cluster"])["cluster"])
    authority = cluster.get("certificate-authority")
    if authority:
        cluster["certificate-authority"] = str((path.parent / authority).resolve())
    return cluster


def cluster_ca_pem(cluster: Cluster) -> bytes | None:
    """The CA bundle a cluster entry trusts, or None if it relies on system roots."""
    if "certificate-authority-data" in cluster:
        return base64.b64decode(cluster["certificate-authority-data"])
    if "certificate-authority" in cluster:
        return Path(cluster["certificate-authority"]).read_bytes()
    return None


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry["name"] == name:
            return dict(entry)
    raise ValueError(f"kubeconfig has no entry {name!r} in {section}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
