"""Throwaway certificate authorities for the TLS tests, made with the `openssl` CLI.

Nothing here skips: without openssl the tests fail and say so, because a TLS test that quietly does
not run proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
CURVE = "prime256v1"  # EC keys: generated in milliseconds, unlike RSA


@dataclass(frozen=True)
class Ca:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ServerCert:
    cert: Path
    key: Path


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise RuntimeError("openssl CLI not found: the TLS tests need it (apt-get install openssl)")
    return found


def _run(*args: str) -> None:
    result = subprocess.run([openssl(), *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")


def make_ca(directory: Path, name: str) -> Ca:
    """A self-signed CA with the extensions strict verifiers want (CA:TRUE, keyCertSign)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Ca(directory / f"{name}.crt", directory / f"{name}.key")
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
        "-keyout", str(ca.key), "-out", str(ca.cert), "-days", DAYS, "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return ca


def make_server_cert(ca: Ca, directory: Path, name: str = "server") -> ServerCert:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    directory.mkdir(parents=True, exist_ok=True)
    server = ServerCert(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
        "-keyout", str(server.key), "-out", str(csr), "-subj", "/CN=localhost",
    )  # fmt: skip
    _run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", "2", "-days", DAYS, "-extfile", str(ext), "-out", str(server.cert),
    )  # fmt: skip
    return server
