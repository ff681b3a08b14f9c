"""What the ``hallfleet provision`` commands do: provision, rotate and revoke accounts, render broker files.

Every change happens under the registry lock and is recorded with the person who made it. A device's
password leaves this module once, in its bundle; the registry keeps only the hash. Bridge and service
passwords are kept (mode 0600 in the provisioning directory, beside the CA key) because the broker
files that carry them are rendered again after every change.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.signing import key_id, private_to_text, public_to_text
from provisioning import brokerconf
from provisioning.brokerconf import Bridge, Layout
from provisioning.credentials import (
    CredentialError,
    Issued,
    RevokedCert,
    SiteCa,
    cert_names,
    cert_not_after,
    hash_password,
    new_password,
    write_file,
)
from provisioning.registry import (
    API_USER,
    CONSUMER_USER,
    Account,
    AuditEntry,
    AuthKind,
    CrlReason,
    Fleet,
    Registry,
    RegistryError,
    Revocation,
    Role,
    SignKey,
    bridge_username,
    check_person,
    device_username,
    hall_consumer_username,
)

SERVER_RENEW_BEFORE = timedelta(days=90)
RENDERS = "broker-renders.json"  # each broker directory rendered, and how, so a revoke can render them again


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    site: str
    device: str
    role: Role
    auth: AuthKind
    approved_by: str
    broker_host: str
    broker_port: int | None = None  # None: 8883 for passwords, 8884 for certificates
    hours24: bool | None = None  # a 24-hour device; None: not said (the site's name patterns decide)


@dataclass(frozen=True, slots=True)
class Secrets:
    """What an account needs to log in; handed out once (a bundle, the broker's output directory)."""

    username: str
    ca_pem: bytes
    password: str | None = None
    cert: Issued | None = None
    sign_key: str | None = None  # a device's Ed25519 private key, base64: the bundle's sign-key credential


@dataclass(frozen=True, slots=True)
class HallOptions:
    """A hall broker: which site, where the centre is, and how its bridge logs in."""

    site: str
    centre_host: str
    centre_port: int | None = None
    auth: AuthKind = "password"
    approved_by: str | None = None
    restart_timeout: tuple[int, int] = (5, 60)
    consumer: bool = False  # a hall consumer runs beside this broker (docs/hall-autonomy.md): its account too


@dataclass(slots=True)
class BrokerFiles:
    """The broker's output directory and what was written to it."""

    out: Path
    written: list[Path] = field(default_factory=list)
    created_accounts: list[str] = field(default_factory=list)

    def write(self, name: str, data: bytes | str, mode: int) -> None:
        self.written.append(write_file(self.out / name, data, mode))


class Provisioner:
    def __init__(self, directory: Path, now: Callable[[], datetime] = utc_now, ca_name: str = "hallfleet CA") -> None:
        self.directory = Path(directory)
        self.registry = Registry(self.directory)
        self.now = now
        self.ca_name = ca_name
        self._ca: SiteCa | None = None

    @property
    def ca(self) -> SiteCa:
        if self._ca is None:
            self._ca = SiteCa.load_or_create(self.directory / "ca", self.ca_name, self.now())
        return self._ca

    # -- credentials ----------------------------------------------------------------------------------------
    def _credentials(self, username: str, auth: AuthKind, at: datetime) -> tuple[Secrets, dict[str, Any]]:
        """New credentials and the registry fields that describe them."""
        if auth == "password":
            password = new_password()
            fields: dict[str, Any] = {
                "password_hash": hash_password(password),
                "cert_serial": None,
                "cert_not_after": None,
            }
            return Secrets(username, self.ca.cert_pem, password=password), fields
        issued = self.ca.issue_client(username, at)
        fields = {"password_hash": None, "cert_serial": f"{issued.serial:x}", "cert_not_after": issued.not_after}
        return Secrets(username, self.ca.cert_pem, cert=issued), fields

    def _secret_path(self, username: str, ext: str = "password") -> Path:
        return self.directory / "secrets" / f"{username}.{ext}"

    def _keep(self, secrets: Secrets) -> None:
        """Bridge and service secrets stay here (0600): every render of the broker files needs them again."""
        if secrets.password is not None:
            write_file(self._secret_path(secrets.username), secrets.password + "\n")
        if secrets.cert is not None:
            write_file(self._secret_path(secrets.username, "crt"), secrets.cert.cert_pem)
            write_file(self._secret_path(secrets.username, "key"), secrets.cert.key_pem)

    # -- devices --------------------------------------------------------------------------------------------
    def provision_device(self, req: DeviceRequest) -> tuple[Account, Secrets]:
        """A new device (or a new one under a revoked device's id); an active device is rotated instead."""
        by = check_person(req.approved_by, "--approved-by")
        username = device_username(req.site, req.device)
        with self.registry.locked():
            fleet = self.registry.load()
            old = fleet.get(username)
            if old is not None and old.active:
                raise RegistryError(f"{old.label} is already provisioned: use `hallfleet provision rotate {old.label}`")
            at = self.now()
            secrets, fields = self._credentials(username, req.auth, at)
            sign_key, public = new_sign_key(at)
            secrets = dataclasses.replace(secrets, sign_key=sign_key)
            account = Account(
                sign_keys=(public,),
                username=username,
                kind="device",
                site=req.site,
                device=req.device,
                role=req.role,
                auth=req.auth,
                approved_by=by,
                created_at=at,
                broker_host=req.broker_host,
                broker_port=req.broker_port,
                hours24=req.hours24,
                **fields,
            )
            detail = f"{req.role}, {req.auth}" + {None: "", True: ", 24-hour", False: ", opening hours"}[req.hours24]
            entry = AuditEntry(at=at, action="provision", username=username, by=by, detail=detail)
            self.registry.save(fleet.put(account, entry))
        return account, secrets

    def set_hours24(self, username: str, hours24: bool, by: str | None) -> tuple[Account, bool | None]:
        """Register an active device as a 24-hour device or not; returns it and what it was before."""
        person = check_person(by, "--by")
        with self.registry.locked():
            fleet = self.registry.load()
            old = _active(fleet, username)
            if old.kind != "device":
                raise RegistryError(f"{old.label} is a {old.kind} account: only a device has a 24-hour status")
            account = old.model_copy(update={"hours24": hours24})
            detail = f"{old.hours24} -> {hours24}"
            entry = AuditEntry(at=self.now(), action="hours24", username=username, by=person, detail=detail)
            self.registry.save(fleet.put(account, entry))
        return account, old.hours24

    def rotate(self, username: str, by: str | None) -> tuple[Account, Secrets]:
        """New credentials for an active account; an old certificate goes on the CRL (superseded)."""
        person = check_person(by, "--by")
        with self.registry.locked():
            fleet = self.registry.load()
            old = _active(fleet, username)
            at = self.now()
            secrets, fields = self._credentials(username, old.auth, at)
            fleet = _retire_cert(fleet, old, at, "superseded")
            if old.kind == "device":  # a new signing key; the old one still vouches for events signed before now
                sign_key, public = new_sign_key(at)
                secrets = dataclasses.replace(secrets, sign_key=sign_key)
                fields["sign_keys"] = (*_sign_keys_ended(old.sign_keys, "retired_at", at), public)
            account = old.model_copy(update={"rotated_at": at, **fields})
            self.registry.save(fleet.put(account, AuditEntry(at=at, action="rotate", username=username, by=person)))
            if old.kind != "device":
                self._keep(secrets)
        return account, secrets

    def revoke(self, username: str, by: str | None, reason: str, *, compromised: bool = False) -> Account:
        """The account leaves the password file and the ACL at the next render; its certificate goes on the CRL."""
        person = check_person(by, "--by")
        if not reason.strip():
            raise RegistryError("--reason: say why (lost, stolen, decommissioned, replaced, ...)")
        with self.registry.locked():
            fleet = self.registry.load()
            old = _active(fleet, username)
            at = self.now()
            fleet = _retire_cert(fleet, old, at, "key_compromise" if compromised else "cessation_of_operation")
            account = old.model_copy(
                update={
                    "state": "revoked",
                    "revoked_at": at,
                    "revoked_by": person,
                    "revoke_reason": reason,
                    # from now no key of it vouches for anything; what it signed before stays good
                    "sign_keys": _sign_keys_ended(old.sign_keys, "revoked_at", at),
                }
            )
            entry = AuditEntry(at=at, action="revoke", username=username, by=person, detail=reason)
            self.registry.save(fleet.put(account, entry))
        for ext in ("password", "crt", "key"):
            self._secret_path(username, ext).unlink(missing_ok=True)
        return account

    # -- bridges and services -------------------------------------------------------------------------------
    def _ensure(self, fleet: Fleet, account: Account, approved_by: str | None) -> tuple[Fleet, Secrets | None]:
        """Create a bridge or service account unless it is active; its password is kept for re-rendering."""
        if (old := fleet.get(account.username)) is not None and old.active:
            return fleet, None
        by = check_person(approved_by, f"--approved-by (to create {account.username})")
        at = self.now()
        secrets, fields = self._credentials(account.username, account.auth, at)
        account = account.model_copy(update={"approved_by": by, "created_at": at, **fields})
        self._keep(secrets)
        entry = AuditEntry(at=at, action="provision", username=account.username, by=by, detail=account.kind)
        return fleet.put(account, entry), secrets

    def stored_password(self, username: str) -> str:
        try:
            return self._secret_path(username).read_text().strip()
        except FileNotFoundError:
            raise RegistryError(f"no stored password for {username}: `hallfleet provision rotate {username}`") from None

    # -- broker files ---------------------------------------------------------------------------------------
    def render_broker(
        self,
        out: Path,
        layout: Layout,
        hosts: Sequence[str],
        hall: HallOptions | None = None,
        approved_by: str | None = None,
    ) -> BrokerFiles:
        """Write the centre's (hall None) or a hall's broker directory: conf, passwd, ACL, CA, CRL, server cert."""
        files = BrokerFiles(Path(out))
        with self.registry.locked():
            fleet = self.registry.load()
            fleet, new = self._ensure_accounts(fleet, hall, approved_by)
            self.registry.save(fleet)
        files.created_accounts = [s.username for s in new]
        site = hall.site if hall else None
        self._write_tls(files, fleet, hosts, f"hall-{site}" if site else "centre")
        files.write(brokerconf.PASSWD, brokerconf.passwords(fleet, site), 0o640)
        files.write(brokerconf.ACL, brokerconf.acl(fleet, site), 0o644)
        self._write_service_secrets(files, fleet, site)
        if hall is None:
            conf = brokerconf.centre_conf(layout)
        else:
            conf = brokerconf.hall_conf(layout, self._bridge(files, fleet, hall))
        # 0640: a hall's conf holds the bridge password (Mosquitto has no separate file for it).
        files.write(brokerconf.CONF, conf, 0o640)
        brokerconf.set_ownership(files.written, layout)
        self._remember_render(Path(out), layout, hosts, hall)
        return files

    def rerender_brokers(self) -> tuple[list[BrokerFiles], list[str]]:
        """Render every broker directory again as it was last rendered (``render_broker`` remembers each one
        in RENDERS): what a revoke or rotate needs before the broker is reloaded. Returns the directories
        written and why any was skipped (a hall whose bridge account is revoked needs a new one, approved)."""
        written, skipped = [], []
        fleet = self.registry.load()
        for out, (layout, hosts, hall) in self._renders().items():
            bridge = fleet.get(_bridge_account(hall).username) if hall is not None else None
            if hall is not None and (bridge is None or not bridge.active):
                skipped.append(
                    f"{out}: 大厅 {hall.site} 的桥接账号已吊销 / the bridge account of hall {hall.site} is revoked: "
                    "render it with --approved-by for a new one"
                )
                continue
            if hall is not None and hall.consumer and not _is_active(fleet, hall_consumer_username(hall.site)):
                skipped.append(
                    f"{out}: 大厅 {hall.site} 的大厅消费者账号已吊销, 已从该代理移除 / the hall consumer account of "
                    f"{hall.site} is revoked and left out: render with --hall-consumer --approved-by for a new one"
                )
                hall = dataclasses.replace(hall, consumer=False)
            written.append(self.render_broker(out, layout, hosts, hall))
        return written, skipped

    def _remember_render(self, out: Path, layout: Layout, hosts: Sequence[str], hall: HallOptions | None) -> None:
        renders = {str(k): v for k, v in self._renders_raw().items()}
        layout_fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(layout).items()}
        hall_fields = None if hall is None else {**dataclasses.asdict(hall), "approved_by": None}
        renders[str(out.resolve())] = {"layout": layout_fields, "hosts": list(hosts), "hall": hall_fields}
        write_file(self.directory / RENDERS, json.dumps(renders, indent=2, ensure_ascii=False) + "\n", 0o600)

    def _renders_raw(self) -> dict[str, Any]:
        path = self.directory / RENDERS
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: unreadable ({exc}); render the broker files again") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: not a JSON object; render the broker files again")
        return data

    def _renders(self) -> dict[Path, tuple[Layout, list[str], HallOptions | None]]:
        renders = {}
        for out, r in self._renders_raw().items():
            try:
                lay = dict(r["layout"])
                for name in ("conf_dir", "persistence_dir", "log_file"):
                    lay[name] = None if lay[name] is None else Path(lay[name])
                h = r["hall"]
                hall = None if h is None else HallOptions(**{**h, "restart_timeout": tuple(h["restart_timeout"])})
                renders[Path(out)] = (Layout(**lay), [str(h) for h in r["hosts"]], hall)
            except (KeyError, TypeError, ValueError) as exc:
                raise RegistryError(f"{self.directory / RENDERS}: the render of {out} is unreadable ({exc!r})") from exc
        return renders

    def _ensure_accounts(
        self, fleet: Fleet, hall: HallOptions | None, approved_by: str | None
    ) -> tuple[Fleet, list[Secrets]]:
        if hall is None:
            wanted = [_service(CONSUMER_USER), _service(API_USER)]
        else:
            wanted = [_bridge_account(hall)]
            if hall.consumer:
                wanted.append(_service(hall_consumer_username(hall.site), hall.site))
        created = []
        for account in wanted:
            fleet, secrets = self._ensure(fleet, account, approved_by or (hall.approved_by if hall else None))
            if secrets is not None:
                created.append(secrets)
        return fleet, created

    def _bridge(self, files: BrokerFiles, fleet: Fleet, hall: HallOptions) -> Bridge:
        account = fleet.require(bridge_username(hall.site))
        port = hall.centre_port or brokerconf.port_for(Layout(), account.auth)
        password = None
        if account.auth == "cert":
            files.write(brokerconf.BRIDGE_CERT, self._secret_path(account.username, "crt").read_bytes(), 0o644)
            files.write(brokerconf.BRIDGE_KEY, self._secret_path(account.username, "key").read_bytes(), 0o640)
        else:
            password = self.stored_password(account.username)
        return Bridge(account, hall.centre_host, port, password, hall.restart_timeout)

    def _write_service_secrets(self, files: BrokerFiles, fleet: Fleet, site: str | None) -> None:
        """The passwords of the services that log in at this broker, for their configs' password_file."""
        for account in fleet.active("service"):
            if account.site != site:
                continue
            password = self.stored_password(account.username)
            files.write(f"credentials/{account.username}.password", password + "\n", 0o600)

    def _write_tls(self, files: BrokerFiles, fleet: Fleet, hosts: Sequence[str], name: str) -> None:
        """CA, CRL and server certificate. Keys are 0640 like the rest: install them root:mosquitto, because
        Mosquitto re-reads them on SIGHUP after it has dropped root."""
        cert, key = self.server_cert(name, hosts)
        revoked = [RevokedCert(int(r.serial, 16), r.revoked_at, x509.ReasonFlags[r.reason]) for r in fleet.revocations]
        files.write(brokerconf.CA, self.ca.cert_pem, 0o644)
        files.write(brokerconf.CRL, self.ca.crl(revoked, self.now()), 0o644)
        files.write(brokerconf.SERVER_CERT, cert, 0o644)
        files.write(brokerconf.SERVER_KEY, key, 0o640)

    def server_cert(self, name: str, hosts: Sequence[str]) -> tuple[bytes, bytes]:
        """The broker's certificate, kept between renders; issued again when the names change or it nears expiry."""
        crt, key = self.directory / "servers" / f"{name}.crt", self.directory / "servers" / f"{name}.key"
        if crt.exists() and key.exists():
            pem = crt.read_bytes()
            fits = not hosts or sorted(cert_names(pem)) == sorted(hosts)
            if fits and cert_not_after(pem) - self.now() > SERVER_RENEW_BEFORE:
                return pem, key.read_bytes()
        if not hosts:
            raise CredentialError(f"no server certificate for {name} yet: give the broker's names with --host")
        issued = self.ca.issue_server(list(hosts), self.now())
        write_file(key, issued.key_pem, 0o600)
        write_file(crt, issued.cert_pem, 0o644)
        return issued.cert_pem, issued.key_pem


def _is_active(fleet: Fleet, username: str) -> bool:
    account = fleet.get(username)
    return account is not None and account.active


def _active(fleet: Fleet, username: str) -> Account:
    account = fleet.require(username)
    if not account.active:
        raise RegistryError(f"{account.label} was revoked on {account.revoked_at:%Y-%m-%d}: provision it anew")
    return account


def _retire_cert(fleet: Fleet, account: Account, at: datetime, reason: CrlReason) -> Fleet:
    if account.cert_serial is None:
        return fleet
    return fleet.revoke_serial(
        Revocation(serial=account.cert_serial, username=account.username, revoked_at=at, reason=reason)
    )


def _service(username: str, site: str | None = None) -> Account:
    # approved_by and created_at are filled in by _ensure; these placeholders never reach the registry.
    return Account(username=username, kind="service", site=site, auth="password", approved_by="-", created_at=utc_now())


def _bridge_account(hall: HallOptions) -> Account:
    return Account(
        username=bridge_username(hall.site),
        kind="bridge",
        site=hall.site,
        auth=hall.auth,
        approved_by="-",
        created_at=utc_now(),
    )


def new_sign_key(at: datetime) -> tuple[str, SignKey]:
    """A device's Ed25519 signing key: the private half for its bundle, the public half for the registry."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    return private_to_text(private), SignKey(key_id=key_id(public), public_key=public_to_text(public), valid_from=at)


def _sign_keys_ended(keys: tuple[SignKey, ...], end: str, at: datetime) -> tuple[SignKey, ...]:
    """Each key not yet ended ``end`` (retired_at or revoked_at) ends at ``at``."""
    return tuple(k if getattr(k, end) is not None else k.model_copy(update={end: at}) for k in keys)
