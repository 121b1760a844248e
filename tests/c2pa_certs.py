"""A throwaway C2PA signing identity, generated at test time (no private key is ever committed).

c2pa-rs checks the signing certificate's profile: an X.509 v3 end-entity certificate (not self-signed,
``basicConstraints CA:FALSE``), ``keyUsage digitalSignature`` (critical), an extended key usage it
accepts (``emailProtection`` here; ``documentSigning`` also works), subject/authority key identifiers,
inside its validity period. So this makes a small CA and a signing certificate issued by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class SigningIdentity:
    chain_pem: bytes  # signing certificate, then the CA (c2pa wants the chain without a trust anchor
    # beyond the issuer; including the issuing CA is what lets a verifier build the path)
    key_pem: bytes
    ca_pem: bytes  # the trust anchor, for ECOMGEN_C2PA_TRUST_ANCHORS / verify(trust_anchors_pem=...)

    def write(self, folder: Path) -> tuple[Path, Path, Path]:
        """Write chain, key and CA as PEM files (for the env-var configuration); returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "chain.pem", folder / "key.pem", folder / "ca.pem"
        for p, data in zip(paths, (self.chain_pem, self.key_pem, self.ca_pem), strict=True):
            p.write_bytes(data)
        paths[1].chmod(0o600)
        return paths


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ecomgen tests"),
        ]
    )


def make_test_identity(common_name: str = "ecomgen test signer") -> SigningIdentity:
    """A P-256 CA and an ES256 signing certificate it issued, valid from yesterday for 30 days."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ecomgen test CA"))
        .issuer_name(_name("ecomgen test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningIdentity(
        chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ca_pem=ca.public_bytes(pem),
    )
