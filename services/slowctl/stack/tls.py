"""TLS material for the gateway and the broker: a self-signed CA and a server certificate.

Idempotent: existing files are kept, so a lab's own certificate (dropped in
as server.crt / server.key) is never replaced. A missing server certificate
is issued by the CA here; a server certificate whose names do not cover the
requested host names is re-issued only if our CA signed it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity browsers accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hostnames: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys([*hostnames, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(names)


def _covers(cert: x509.Certificate, hostnames: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(hostnames) <= have


def _new_ca(files: TlsFiles) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "slowctl"),
            x509.NameAttribute(NameOID.COMMON_NAME, "slowctl local CA"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key), 0o600)
    _write(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _new_server(files: TlsFiles, hostnames: list[str]) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(_san(hostnames), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _signed_by_ca(files: TlsFiles) -> bool:
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ensure_tls(directory: Path, hostnames: list[str]) -> TlsFiles:
    """ca.crt, server.crt, server.key in `directory`, and the CA's key in `directory/../ca/`.

    The servers (broker, gateway) get `directory` mounted; the CA key, which could sign
    a certificate for any name the lab's browsers would trust, stays out of their reach.
    Creates what is missing.
    """
    if not hostnames or not all(hostnames):
        raise ValueError("at least one host name is needed for the server certificate")
    ca_dir = directory.parent / "ca"
    for d in (directory, ca_dir):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    files = TlsFiles(directory / "ca.crt", ca_dir / "ca.key", directory / "server.crt", directory / "server.key")
    if (directory / "ca.key").exists() and not files.ca_key.exists():  # written there by slowctl 0.2.0 dev
        (directory / "ca.key").rename(files.ca_key)
    own_server = files.cert.exists() and files.key.exists()
    if own_server and not _signed_by_ca(files):
        return files  # the lab's own certificate: never touched
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        _new_ca(files)
        own_server = False
    if not own_server or not _covers(x509.load_pem_x509_certificate(files.cert.read_bytes()), hostnames):
        _new_server(files, hostnames)
    return files
