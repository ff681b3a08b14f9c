"""``hallfleet provision device|rotate|revoke|broker|list``: the IT section's device approvals and broker files.

Every command names a person (``--approved-by``, ``--by``): the IT rules ask for approval and a record of
every device and change, and for per-person accounts. The registry and the CA key live in the
provisioning directory (root only); nothing here talks to a broker: after a change, render the broker
files and reload Mosquitto.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
from pathlib import Path
from typing import Any, get_args

from protocol.topics import TopicError
from provisioning import brokerconf
from provisioning.brokerconf import Layout
from provisioning.bundle import BundleOptions, preflight, write_bundle
from provisioning.credentials import CredentialError
from provisioning.operations import DeviceRequest, HallOptions, Provisioner
from provisioning.registry import DEFAULT_DIR, Account, AuthKind, RegistryError, Role, device_username, parse_target

NEXT_STEP = "then `hallfleet provision broker --out DIR ...`, install the files and reload Mosquitto"


def current_user() -> str:
    """The person at the keyboard, also under sudo: the registry names people, not 'root'."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("provision", help="device identities, credentials, install bundles and broker files (IT)")
    psub = p.add_subparsers(dest="provision_action", required=True)
    d = _cmd(psub, "device", "approve a device: registry entry, credentials and its install bundle", _device)
    d.add_argument("--site", required=True, help="site (hall) id, e.g. qingpu")
    d.add_argument("--id", dest="device", required=True, help="device id, unique in its site, e.g. att-1")
    d.add_argument("--role", required=True, choices=get_args(Role), help="what the device does")
    d.add_argument("--approved-by", required=True, help="the IT section member who approved it (a person)")
    d.add_argument("--auth", default="password", choices=get_args(AuthKind), help="password over TLS, or cert")
    d.add_argument("--broker-host", required=True, help="the broker the device connects to (hall or centre)")
    d.add_argument("--broker-port", type=int, default=None, help="default: 8883 (password), 8884 (cert)")
    _bundle_args(d)
    r = _cmd(psub, "rotate", "new credentials (a device gets a new bundle; its old certificate is revoked)", _rotate)
    r.add_argument("target", help="SITE/DEVICE, or bridge-SITE / hallfleet-consumer / hallfleet-api")
    r.add_argument("--by", default=None, help="who (default: the logged-in user)")
    _bundle_args(r, required=False)
    v = _cmd(psub, "revoke", "a lost, stolen or retired device no longer logs in", _revoke)
    v.add_argument("target", help="SITE/DEVICE, or bridge-SITE")
    v.add_argument("--by", required=True, help="who revokes it (a person)")
    v.add_argument("--reason", required=True, help="why: lost, stolen, decommissioned, replaced, ...")
    v.add_argument("--compromised", action="store_true", help="the key may be in other hands (CRL: keyCompromise)")
    _broker_parser(psub)
    _cmd(psub, "list", "the registry: accounts, state, approvals, certificate expiry", _list)


def _cmd(sub: Any, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    default = Path(os.environ.get("HALLFLEET_PROVISIONING_DIR", DEFAULT_DIR))
    p.add_argument("--dir", type=Path, default=default, help=f"provisioning directory (default {default})")
    p.set_defaults(func=lambda a: _guarded(func, a))
    return p


def _bundle_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--out", type=Path, required=required, help="where the bundle goes")
    p.add_argument("--wheel", type=Path, default=None, help="the hallfleet wheel to ship in the bundle")
    p.add_argument("--index-url", default=None, help="the package index the device installs from")
    p.add_argument("--hardware", type=Path, default=None, help="TOML with the role's hardware sections")
    p.add_argument("--tar", action="store_true", help="write DIR/{site}.{device}.tar.gz instead of a directory")
    p.add_argument("--unit", type=Path, default=None, help="agent unit template (default: the repository's)")
    p.add_argument("--app-unit", default="kiosk-app.service", help="kiosks: the app unit the agent may restart")
    p.add_argument("--gallery-keys", type=Path, default=None, help="the centre's gallery key directory")


def _broker_parser(psub: Any) -> None:
    b = _cmd(psub, "broker", "render Mosquitto files: the centre's, or a hall's bridged to the centre", _broker)
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument("--host", action="append", default=[], help="a name or address clients dial (repeat)")
    b.add_argument("--conf-dir", type=Path, default=Layout().conf_dir, help="where the files are installed")
    b.add_argument("--hall", default=None, help="render a hall's broker for this site")
    b.add_argument("--centre-host", default=None, help="hall: the centre broker's name (in its certificate)")
    b.add_argument("--centre-port", type=int, default=None, help="hall: default 8883 (password), 8884 (cert)")
    b.add_argument("--bridge-auth", default="password", choices=get_args(AuthKind), help="hall: bridge login")
    b.add_argument("--approved-by", default=None, help="needed when this creates the service or bridge accounts")


def _guarded(func: Any, a: argparse.Namespace) -> int:
    try:
        return int(func(a, Provisioner(a.dir)))
    except (RegistryError, CredentialError, TopicError, OSError) as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1


def _options(a: argparse.Namespace) -> BundleOptions:
    opts = BundleOptions(wheel=a.wheel, index_url=a.index_url, hardware=a.hardware, tar=a.tar, app_unit=a.app_unit)
    if a.unit is not None:
        opts = dataclasses.replace(opts, unit_template=a.unit)
    if a.gallery_keys is not None:
        opts = dataclasses.replace(opts, gallery_keys_dir=a.gallery_keys)
    return opts


def _port(account: Account) -> int:
    return account.broker_port or brokerconf.port_for(Layout(), account.auth)


def _device(a: argparse.Namespace, prov: Provisioner) -> int:
    opts = _options(a)
    preflight(a.out, device_username(a.site, a.device), opts, a.role)
    req = DeviceRequest(a.site, a.device, a.role, a.auth, a.approved_by, a.broker_host, a.broker_port)
    account, secrets = prov.provision_device(req)
    path = write_bundle(a.out, account, secrets, opts, _port(account))
    print(f"{account.label} provisioned ({account.role}, {account.auth}), approved by {account.approved_by}")
    print(f"bundle: {path} (holds the device's secret: copy it to the device, run first-boot.sh, delete it)")
    print(f"the broker accepts {account.username} once its files are rendered again: {NEXT_STEP}")
    return 0


def _rotate(a: argparse.Namespace, prov: Provisioner) -> int:
    username = parse_target(a.target)
    account = prov.registry.load().require(username)
    if account.kind == "device":
        if a.out is None:
            raise RegistryError("a device's new credentials go into a new bundle: give --out DIR")
        preflight(a.out, username, _options(a), account.role or "none")
    account, secrets = prov.rotate(username, a.by or current_user())
    if account.kind == "device":
        path = write_bundle(a.out, account, secrets, _options(a), _port(account))
        print(f"{account.label}: new credentials in {path}; run its first-boot.sh again on the device")
    else:
        print(f"{account.username}: new credentials kept in {prov.directory}")
    print(f"the old credentials work until the broker files are rendered again: {NEXT_STEP}")
    return 0


def _revoke(a: argparse.Namespace, prov: Provisioner) -> int:
    account = prov.revoke(parse_target(a.target), a.by, a.reason, compromised=a.compromised)
    print(f"{account.label} revoked by {account.revoked_by}: {account.revoke_reason}")
    print(f"it still logs in until the broker files are rendered again: {NEXT_STEP}")
    return 0


def _broker(a: argparse.Namespace, prov: Provisioner) -> int:
    hall = None
    if a.hall is not None:
        if not a.centre_host:
            raise RegistryError("--hall needs --centre-host: the centre broker's name as in its certificate")
        hall = HallOptions(a.hall, a.centre_host, a.centre_port, a.bridge_auth, a.approved_by)
    layout = Layout(conf_dir=a.conf_dir, local_port=None if hall else Layout().local_port)
    files = prov.render_broker(a.out, layout, a.host, hall, a.approved_by)
    for name in files.created_accounts:
        print(f"created {name} (approved by {a.approved_by})")
    print(f"{len(files.written)} files in {a.out}: install them in {a.conf_dir} (owner root, group mosquitto)")
    print(f"and {brokerconf.CONF} as /etc/mosquitto/mosquitto.conf (it replaces Debian's: Mosquitto refuses a")
    print("second persistence_location or log file), then `systemctl reload mosquitto` (SIGHUP)")
    return 0


def _list(a: argparse.Namespace, prov: Provisioner) -> int:
    for acc in sorted(prov.registry.load().accounts, key=lambda x: (x.kind, x.username)):
        expiry = f" cert until {acc.cert_not_after:%Y-%m-%d}" if acc.cert_not_after else ""
        role = f" {acc.role}" if acc.role else ""
        print(f"{acc.label:28} {acc.kind}{role} {acc.auth} {acc.state}: approved by {acc.approved_by}{expiry}")
    return 0
