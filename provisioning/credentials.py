"""Credentials the broker checks: Mosquitto password hashes, and certificates from the fleet's own CA.

Passwords: random, shown once (in the device's bundle), stored only as Mosquitto 2.0's own ``$7$``
hash, so the password file can be regenerated from the registry at any time without keeping a
device's secret anywhere but on the device. The format is what ``mosquitto_passwd`` writes:
``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`` with 101 iterations and a 12-byte
salt (tests/test_provisioning.py checks both directions against the real tool and broker).

Certificates: one EC P-256 CA per installation (10 years); client certificates (2 years) carry
CN = the MQTT username "{site}.{device}", which Mosquitto's ``use_identity_as_username`` takes as
the login, so a device cannot claim another identity without another device's key. Revoked
serials go on a CRL that Mosquitto's ``crlfile`` reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default in 2.0; the broker reads the count from each line
SALT_BYTES = 12
PASSWORD_BYTES = 32  # 256 bits of randomness: the 101-iteration hash is then no shortcut to the password

CA_DAYS = 3650
CLIENT_DAYS = 730
SERVER_DAYS = 730
# A CRL outlives every certificate issued before it: any certificate newer than the CRL came with a
# provisioning run that issued a newer CRL too. So the broker never meets an expired CRL (OpenSSL
# would then refuse every client) as long as it is reloaded after each run.
CRL_DAYS = CLIENT_DAYS + 30
# Skew allowance: a Pi without RTC may run a few minutes behind the provisioning host.
BACKDATE = timedelta(minutes=10)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


class CredentialError(Exception):
    """A credential that cannot be made or used; the message says which and what to do."""


# -- passwords -------------------------------------------------------------------------------------------
def new_password() -> str:
    """A random password without ':' or whitespace (the password file and the CLI could not carry them)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The ``$7$`` line Mosquitto 2.0 verifies (its PW_SHA512_PBKDF2 format)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (ours or mosquitto_passwd's)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def password_file(entries: Iterable[tuple[str, str]]) -> str:
    """Mosquitto password file text from (username, $7$ hash) pairs."""
    lines = []
    for user, hashed in entries:
        if ":" in user or not hashed.startswith("$7$"):
            raise CredentialError(f"cannot put {user!r} in a Mosquitto password file")
        lines.append(f"{user}:{hashed}")
    return "".join(line + "\n" for line in lines)


# -- files -----------------------------------------------------------------------------------------------
def write_file(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write atomically with ``mode`` from the start: a reader never sees half a key, nor a moment of 0644."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)
    return path


# -- certificates ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its new private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_after: datetime


@dataclass(frozen=True, slots=True)
class RevokedCert:
    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class SiteCa:
    """The installation's CA: its key never leaves the provisioning directory (mode 0600, root)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str, now: datetime) -> SiteCa:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> SiteCa:
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise CredentialError(f"cannot load the CA from {directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CredentialError(f"{directory / CA_KEY}: expected an EC key")
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, directory: Path, name: str, now: datetime) -> SiteCa:
        if (directory / CA_CERT).exists():
            return cls.load(directory)
        ca = cls.create(name, now)
        write_file(directory / CA_KEY, _key_pem(ca.key), 0o600)
        write_file(directory / CA_CERT, ca.cert_pem, 0o644)
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_client(self, username: str, now: datetime, days: int = CLIENT_DAYS) -> Issued:
        """A client certificate whose CN is the MQTT username; clientAuth only, so it cannot serve TLS."""
        return self._issue(username, [], ExtendedKeyUsageOID.CLIENT_AUTH, now, days)

    def issue_server(self, hosts: Sequence[str], now: datetime, days: int = SERVER_DAYS) -> Issued:
        """The broker's certificate: the names clients dial are in the SAN (clients check it, not the CN);
        serverAuth only, so a copy of the broker's key cannot log in as a client."""
        if not hosts:
            raise CredentialError("a server certificate needs at least one host name or address (--host)")
        return self._issue(hosts[0], [_san(h) for h in hosts], ExtendedKeyUsageOID.SERVER_AUTH, now, days)

    def _issue(
        self, cn: str, sans: list[x509.GeneralName], purpose: x509.ObjectIdentifier, now: datetime, days: int
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(now + timedelta(days=days), self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert.serial_number, not_after)

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def crl(self, revoked: Iterable[RevokedCert], now: datetime) -> bytes:
        """The CRL Mosquitto loads with ``crlfile``; it must exist (even empty) once crlfile is set."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + timedelta(days=CRL_DAYS))
            .add_extension(self._authority_key_id(), critical=False)
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for r in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(r.serial)
                .revocation_date(r.revoked_at)
                .add_extension(x509.CRLReason(r.reason), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def cert_not_after(pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def cert_names(pem: bytes) -> list[str]:
    """The SAN entries of a certificate, as text (to tell whether a server certificate still fits)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]
