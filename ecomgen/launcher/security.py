"""Security material of the launcher: admin and statistics keys, the restricted APIs and their
headers, and the TLS certificates and keys (loaded, matched, checked for the right usages)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecomgen.launcher.process import ConfigError

log = logging.getLogger("ecomgen")


# --- restricted APIs (Triton 2.51 names for --grpc-restricted-protocol / --http-restricted-api) ------
RESTRICTABLE_APIS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
# The APIs that let a caller touch server memory or files, or change what is served.
ADMIN_APIS = ("shared-memory", "model-repository", "logging", "trace")
ADMIN_HEADER = "admin-key"
# HTTP inference is off unless --http-inference: Triton answers "expecting header <this>".
HTTP_INFERENCE_OFF_HEADER = "http-inference-is-off-use-grpc"
STATS_HEADER = "stats-key"
# Triton 2.51 expects restricted gRPC headers with this prefix (HTTP takes the bare name).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
ADMIN_KEY_ENV = "ECOMGEN_ADMIN_KEY"
STATS_KEY_ENV = "ECOMGEN_STATS_KEY"
MIN_KEY_CHARS = 16


# --- keys, addresses, TLS ---------------------------------------------------------------------------


def check_key(key: str, what: str) -> str:
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"the {what} must have at least {MIN_KEY_CHARS} characters")
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigError(f"the {what} must be printable ASCII without spaces (it travels in a header)")
    return key


def read_key(path: Path | None, env: str, what: str) -> tuple[str | None, str]:
    """A key from a file (first) or an environment variable; (key, where it came from)."""
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read the {what} file {path}: {e.strerror}") from e
        with contextlib.suppress(OSError):
            if Path(path).stat().st_mode & 0o007:  # group-readable is how Kubernetes mounts secrets
                log.warning("%s file %s is readable by every user; chmod 600 it", what, path)
        return check_key(text, what), f"file {path}"
    value = os.environ.get(env)
    if value:
        return check_key(value, what), f"${env}"
    return None, ""


def admin_headers(key: str, protocol: str = "grpc", header: str = ADMIN_HEADER) -> dict[str, str]:
    """The request headers that unlock the APIs restricted with ``key``."""
    name = GRPC_HEADER_PREFIX + header if protocol == "grpc" else header
    return {name: key}


def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError as e:
        raise ConfigError(f"--address must be an IPv4 or IPv6 address, not {address!r}") from e


def client_host(address: str) -> str:
    """Where a local client reaches a server bound to ``address`` (URL form, IPv6 in brackets)."""
    ip = parse_ip(address)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    return str(ip) if ip.version == 4 else f"[{ip}]"


def load_certificates(path: Path, what: str) -> tuple[bytes, list[Any]]:
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from e
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"{what} {path} is not a PEM certificate: {e}") from e
    return data, certs


def load_private_key(path: Path, what: str) -> tuple[bytes, Any]:
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise ConfigError(f"{what} {path} is encrypted; Triton needs an unencrypted PEM key") from e
    except ValueError as e:
        raise ConfigError(f"{what} {path} is not a PEM private key: {e}") from e
    return data, key


def same_public_key(a: Any, b: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(a.public_bytes(*fmt) == b.public_bytes(*fmt))


@dataclass
class TlsMaterial:
    """The certificate files, read and checked once (each start writes them for Triton again)."""

    cert: bytes
    key: bytes
    ca: bytes | None
    probe_cert: bytes
    probe_key: bytes
    probe_root: bytes
    target_name: str | None  # gRPC ssl_target_name_override for the launcher's own probe


def target_name(cert: Any, host: str) -> str | None:
    """The name the launcher's readiness probe must verify the server certificate against."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if parse_ip(host) in san.get_values_for_type(x509.IPAddress):
            return None
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return str(names[0]).replace("*.", "probe.", 1)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


def allows_client_auth(cert: Any) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku
