"""Throwaway PKI for a local control plane.

Owns every key and certificate a plane needs: one certificate authority, serving
certificates for loopback, client certificates for the admin, the controller manager
and the API server's etcd connection, and the service-account signing key pair.
Nothing here is meant to outlive the plane's temporary directory.

Every key is ECDSA P-256: Go's TLS stack and the service-account token signer both
accept it, and generating one takes microseconds where RSA takes a noticeable part of
a plane's start-up.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(hours=1)

LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.crt` and `<stem>.key` (owner-only) and return their paths."""
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        write_private(key_path, self.key_pem)
        return cert_path, key_path


@dataclass(frozen=True)
class SigningKeyPair:
    """The key pair the API server signs and verifies service-account tokens with."""

    private_pem: bytes
    public_pem: bytes


class Authority:
    """A self-signed certificate authority that issues leaf certificates."""

    def __init__(self, common_name: str) -> None:
        self._key = new_key()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(self._name, self._key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
        self._cert = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).sign(self._key, hashes.SHA256())

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue_serving(self, common_name: str) -> CertifiedKey:
        """A server certificate valid for loopback addresses and in-cluster names."""
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOOPBACK_IPS
        ]
        names += [x509.DNSName(name) for name in LOOPBACK_NAMES]
        return self._issue(
            common_name,
            organizations=(),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alt_names=names,
        )

    def issue_client(
        self, common_name: str, organizations: tuple[str, ...] = ()
    ) -> CertifiedKey:
        """A client certificate; Kubernetes reads CN as the user, O as the groups."""
        return self._issue(
            common_name,
            organizations=organizations,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alt_names=[],
        )

    def _issue(
        self,
        common_name: str,
        *,
        organizations: tuple[str, ...],
        usage: x509.ObjectIdentifier,
        alt_names: list[x509.GeneralName],
    ) -> CertifiedKey:
        key = new_key()
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations
        ]
        builder = (
            _builder(x509.Name(attributes), key.public_key(), issuer=self._name)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alt_names), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return CertifiedKey(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=private_pem(key),
        )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_signing_key_pair() -> SigningKeyPair:
    key = new_key()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return SigningKeyPair(private_pem=private_pem(key), public_pem=public_pem)


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read, with no window where others can."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name | None = None,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
    )
