"""``hallfleet provision device|hours24|sync|rotate|revoke|broker|list``: the IT section's device approvals (and
what it registers about a device: its 24-hour status, pushed to the centre's store) and broker files;
``hallfleet provision staff``: a hall's roster, consent records and face enrolment (provisioning/staff.py).

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
import shlex
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from protocol.topics import TopicError
from provisioning import brokerconf, centre
from provisioning.brokerconf import Layout
from provisioning.bundle import BundleOptions, preflight, write_bundle
from provisioning.credentials import CredentialError
from provisioning.operations import DeviceRequest, HallOptions, Provisioner
from provisioning.registry import DEFAULT_DIR, Account, AuthKind, RegistryError, Role, device_username, parse_target

RELOAD_CMD = "systemctl reload mosquitto"
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
    d.add_argument(
        "--role",
        required=True,
        choices=get_args(Role),
        help="what the device does; rating, queue, door, locker and patrol need --hardware (door/locker: the"
        " serial port and bus address; patrol: its scanner)",
    )
    d.add_argument("--approved-by", required=True, help="the IT section member who approved it (a person)")
    d.add_argument("--auth", default="password", choices=get_args(AuthKind), help="password over TLS, or cert")
    d.add_argument("--broker-host", required=True, help="the broker the device connects to (hall or centre)")
    d.add_argument("--broker-port", type=int, default=None, help="default: 8883 (password), 8884 (cert)")
    d.add_argument(
        "--hours24",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a 24-hour device (SLA in wall-clock time, cleaned every day), or not (--no-hours24); unsaid: the"
        " site's deprecated name patterns decide",
    )
    _centre_arg(d)
    _bundle_args(d)
    h = _cmd(psub, "hours24", "register a device as a 24-hour device or not (the registry, then the centre)", _hours24)
    h.add_argument("target", help="SITE/DEVICE")
    h.add_argument("state", choices=["on", "off"])
    h.add_argument("--by", default=None, help="who (default: the logged-in user)")
    _centre_arg(h)
    y = _cmd(psub, "sync", "the centre's store follows the registry (every device's 24-hour status)", _sync)
    y.add_argument("--by", default=None, help="who (default: the logged-in user)")
    y.add_argument("--config", type=Path, required=True, help="the centre's TOML (the consumer's)")
    r = _cmd(psub, "rotate", "new credentials (a device gets a new bundle; its old certificate is revoked)", _rotate)
    r.add_argument("target", help="SITE/DEVICE, or bridge-SITE / hallfleet-consumer / hallfleet-api")
    r.add_argument("--by", default=None, help="who (default: the logged-in user)")
    _bundle_args(r, required=False)
    _apply_args(r)
    v = _cmd(psub, "revoke", "a lost, stolen or retired device no longer logs in", _revoke)
    v.add_argument("target", help="SITE/DEVICE, or bridge-SITE")
    v.add_argument("--by", required=True, help="who revokes it (a person)")
    v.add_argument("--reason", required=True, help="why: lost, stolen, decommissioned, replaced, ...")
    v.add_argument("--compromised", action="store_true", help="the key may be in other hands (CRL: keyCompromise)")
    _apply_args(v)
    _broker_parser(psub)
    _cmd(psub, "list", "the registry: accounts, state, approvals, certificate expiry", _list)
    _staff_parser(psub)


def _cmd(sub: Any, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    default = Path(os.environ.get("HALLFLEET_PROVISIONING_DIR", DEFAULT_DIR))
    p.add_argument("--dir", type=Path, default=default, help=f"provisioning directory (default {default})")
    p.set_defaults(func=lambda a: _guarded(func, a))
    return p


def _centre_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the centre's TOML (the consumer's): its store learns the 24-hour status at once (else: provision sync)",
    )


def _bundle_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--out", type=Path, required=required, help="where the bundle goes")
    p.add_argument("--wheel", type=Path, default=None, help="the hallfleet wheel to ship in the bundle (optional)")
    p.add_argument(
        "--index-url",
        default=None,
        help="the package index the device installs from (optional; neither: the"
        " bundle carries credentials and config for a device that has hallfleet)",
    )
    p.add_argument(
        "--hardware",
        type=Path,
        default=None,
        help="TOML with the role's hardware sections (e.g. [door.controller] with port.path and address); the"
        " unit grants the agent only the devices they name",
    )
    p.add_argument("--tar", action="store_true", help="write DIR/{site}.{device}.tar.gz instead of a directory")
    p.add_argument("--unit", type=Path, default=None, help="agent unit template (default: the repository's)")
    p.add_argument("--app-unit", default="kiosk-app.service", help="kiosks: the app unit the agent may restart")
    p.add_argument("--gallery-keys", type=Path, default=None, help="the centre's gallery key directory")


def _apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--apply",
        action="store_true",
        help="at once: render every broker directory again as last rendered, then run --reload-cmd",
    )
    p.add_argument(
        "--reload-cmd",
        default=RELOAD_CMD,
        help=f"how Mosquitto re-reads its files (default: {RELOAD_CMD}; it sends SIGHUP)",
    )


def _apply(a: argparse.Namespace, prov: Provisioner, what: str) -> None:
    """Render the broker files again and reload Mosquitto, or say that this is still to do."""
    if not a.apply:
        print(f"{what} until the broker files are rendered again: {NEXT_STEP} (or --apply)")
        return
    written, skipped = prov.rerender_brokers()
    for line in skipped:
        print(f"skipped {line}")
    if not written:
        raise RegistryError("no broker directory was rendered yet: `hallfleet provision broker --out DIR ...` first")
    for files in written:
        print(f"rendered again: {files.out}")
    done = subprocess.run(shlex.split(a.reload_cmd), capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise RegistryError(
            f"`{a.reload_cmd}` failed ({done.returncode}): {detail}; the files are rendered, reload by hand"
        )
    print(f"reloaded: {a.reload_cmd}")


def _broker_parser(psub: Any) -> None:
    b = _cmd(psub, "broker", "render Mosquitto files: the centre's, or a hall's bridged to the centre", _broker)
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument("--host", action="append", default=[], help="a name or address clients dial (repeat)")
    b.add_argument("--conf-dir", type=Path, default=Layout().conf_dir, help="where the files are installed")
    b.add_argument("--hall", default=None, help="render a hall's broker for this site")
    b.add_argument("--centre-host", default=None, help="hall: the centre broker's name (in its certificate)")
    b.add_argument("--centre-port", type=int, default=None, help="hall: default 8883 (password), 8884 (cert)")
    b.add_argument("--bridge-auth", default="password", choices=get_args(AuthKind), help="hall: bridge login")
    b.add_argument(
        "--hall-consumer",
        action="store_true",
        help="hall: a hall consumer runs beside it (docs/hall-autonomy.md): its account, ACL and a localhost listener",
    )
    b.add_argument("--approved-by", default=None, help="needed when this creates the service or bridge accounts")
    _broker_layout_args(b)


def _broker_layout_args(b: argparse.ArgumentParser) -> None:
    """Listeners, persistence, the service user and file ownership: everything the rendered files say, so they
    never need editing by hand (every render, also a revoke's, writes them again). Defaults: Layout()."""
    dflt = Layout()
    b.add_argument("--bind", default=None, help="address the TLS listeners bind (default: every address)")
    b.add_argument("--tls-port", type=int, default=dflt.tls_port, help=f"TLS + password (default {dflt.tls_port})")
    b.add_argument("--mtls-port", type=int, default=dflt.mtls_port, help=f"mutual TLS (default {dflt.mtls_port})")
    b.add_argument(
        "--local-port",
        type=int,
        default=None,
        help=f"plain listener on localhost for the consumer and API (default {dflt.local_port}; 0: none); a hall"
        " has one only with --hall-consumer or this option",
    )
    b.add_argument("--tls-version", default=None, help="e.g. tlsv1.3 (default: Mosquitto's, 1.2 and 1.3)")
    b.add_argument("--persistence-dir", type=Path, default=dflt.persistence_dir, help="where Mosquitto saves state")
    b.add_argument("--no-persistence", action="store_true", help="keep nothing across restarts (not for production)")
    b.add_argument(
        "--autosave-interval",
        type=int,
        default=dflt.autosave_interval_s,
        help=f"seconds between snapshots (default {dflt.autosave_interval_s}; the agents re-send what a crash loses)",
    )
    b.add_argument("--log-file", default=str(dflt.log_file), help="Mosquitto's log file, or 'none' for stderr")
    b.add_argument("--max-queued-messages", type=int, default=dflt.max_queued_messages, help="per client session")
    b.add_argument("--user", dest="run_as", default=None, help="the account Mosquitto drops root for (mosquitto)")
    b.add_argument("--owner", default=None, help="chown the written files to this user (root)")
    b.add_argument("--group", default=None, help="... and this group (mosquitto), so it reads keys after dropping root")


def _layout(a: argparse.Namespace, hall: bool) -> Layout:
    # A hall's broker listens on localhost only for a hall consumer beside it.
    plain = not hall or a.hall_consumer
    local = a.local_port if a.local_port is not None else (Layout().local_port if plain else None)
    layout = Layout(
        conf_dir=a.conf_dir,
        persistence_dir=a.persistence_dir,
        log_file=None if a.log_file in ("", "none") else Path(a.log_file),
        bind=a.bind,
        tls_port=a.tls_port,
        mtls_port=a.mtls_port,
        local_port=local or None,
        max_queued_messages=a.max_queued_messages,
        persistence=not a.no_persistence,
        autosave_interval_s=a.autosave_interval,
        tls_version=a.tls_version,
        run_as=a.run_as,
        file_owner=a.owner,
        file_group=a.group,
    )
    brokerconf.ownership_ids(layout)  # an unknown user or group stops us before anything is written
    return layout


def _staff_parser(psub: Any) -> None:
    s: argparse.ArgumentParser = psub.add_parser(
        "staff", help="a hall's staff: roster, consent records, faces enrolled from photos (encodings only)"
    )
    s.add_argument("--site", required=True, help="site (hall) id, e.g. qingpu")
    s.add_argument("--roster", type=Path, default=None, help="roster CSV/XLSX (站点, 工号, 姓名, ... as staff import)")
    s.add_argument("--photos", type=Path, default=None, help="DIR/<staff_id>.jpg|png, or DIR/<staff_id>/*.jpg")
    s.add_argument(
        "--consent", type=Path, default=None, help="consent CSV/XLSX: 工号, 同意日期, 凭证[, 记录人, 撤回日期]"
    )
    s.add_argument("--keep-photos", type=Path, default=None, help="keep the photos here (0600); default: dropped")
    s.add_argument("--withdraw", metavar="STAFF_ID", default=None, help="consent withdrawn: revoke the face now")
    s.add_argument("--status", action="store_true", help="per staff member: consent, gallery version, last change")
    s.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    s.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    s.add_argument("--by", default=None, help="who (default: the logged-in user)")
    s.set_defaults(func=_staff)


def _staff(a: argparse.Namespace) -> int:
    from broker.attendance.roster import RosterError
    from broker.cli_support import run_with_store
    from provisioning import staff

    return run_with_store(a, _staff_run, refusals=(staff.StaffProvisionError, RosterError))


async def _staff_run(a: argparse.Namespace, store: Any, sites: Any) -> int:
    from broker.config import ConsumerConfig
    from provisioning import staff
    from runtime.clock import SystemClock
    from runtime.settings import load_settings

    inputs = [x for x in (a.roster, a.photos, a.consent) if x is not None]
    if a.status:
        if inputs or a.withdraw:
            raise staff.StaffProvisionError("--status 不能与其他操作同用 / --status takes no other action")
        return await _staff_status(store, a.site, sites[a.site].site_calendar.zone)
    if a.withdraw and inputs:
        raise staff.StaffProvisionError("--withdraw 单独使用 / --withdraw takes no files")
    if not inputs and not a.withdraw:
        raise staff.StaffProvisionError("需要 --roster、--photos、--consent 或 --withdraw / nothing to do")
    cfg = load_settings(ConsumerConfig, a.config)
    req = staff.StaffRequest(
        site=a.site,
        by=a.by or current_user(),
        at=SystemClock().now(),
        zone=sites[a.site].site_calendar.zone,
        roster=a.roster,
        photos=a.photos,
        consent=a.consent,
        keep_photos=a.keep_photos or cfg.gallery.keep_photos_dir,
        withdraw=a.withdraw,
        dry_run=a.dry_run,
        min_shots=cfg.gallery.min_shots,
        within=timedelta(hours=cfg.gallery.revoke_within_h),
    )
    report = await staff.provision_staff(store, req)
    for line in report.lines():
        print(line)
    for path in report.kept:
        print(f"  照片保留 / photo kept: {path}")
    return 1 if report.count("failed") else 0


async def _staff_status(store: Any, site: str, zone: Any) -> int:
    from broker import gallery
    from broker.commands import fmt_time
    from provisioning.staff import staff_status

    async with store.engine.connect() as conn:
        version = await gallery.current_version(conn, site)
        rows = await staff_status(conn, site)
    consent = {"given": "已同意 given", "withdrawn": "已撤回 withdrawn", "none": "无 none"}
    face = {"enrolled": "已录入 enrolled", "revoked": "已撤销 revoked", "none": "未录入 none"}
    print(f"{site}: 人脸库版本 gallery version {version}, {len(rows)} 人 staff")
    print("工号 staff      姓名 name   同意 consent              人脸 face                版本 v  最后变更 last change")
    for r in rows:
        when = r.consent_at.astimezone(zone).date().isoformat() if r.consent_at else ""
        print(
            f"{r.staff_id:14} {r.name:8} {consent[r.consent] + ' ' + when:26} {face[r.gallery]:22} "
            f"{r.gallery_version if r.gallery_version is not None else '-':>6}  {fmt_time(r.last_change)}"
        )
    return 0


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
    req = DeviceRequest(a.site, a.device, a.role, a.auth, a.approved_by, a.broker_host, a.broker_port, a.hours24)
    account, secrets = prov.provision_device(req)
    path = write_bundle(a.out, account, secrets, opts, _port(account))
    print(f"{account.label} provisioned ({account.role}, {account.auth}), approved by {account.approved_by}")
    print(f"bundle: {path} (holds the device's secret: copy it to the device, run first-boot.sh, delete it)")
    if opts.wheel is None and opts.index_url is None:
        print("credentials and config only (no --wheel, no --index-url): the device must have hallfleet installed")
    print(f"the broker accepts {account.username} once its files are rendered again: {NEXT_STEP}")
    _tell_centre(a, prov, [account], account.approved_by)
    return 0


def _hours24(a: argparse.Namespace, prov: Provisioner) -> int:
    by = a.by or current_user()
    account, before = prov.set_hours24(parse_target(a.target), a.state == "on", by)
    was, now = centre.STATUS[before], centre.STATUS[account.hours24]
    print(f"登记 registry: {account.label}: {was} -> {now} ({by}); 已开启的事件不变 (open incidents keep theirs)")
    _tell_centre(a, prov, [account], by)
    return 0


def _sync(a: argparse.Namespace, prov: Provisioner) -> int:
    accounts = list(prov.registry.load().accounts)
    changes = centre.push(a.config, accounts, by=a.by or current_user(), at=prov.now())
    for change in changes:
        print(centre.describe(change))
    n = len(centre.registered(accounts))
    print(f"中心与登记一致 the centre follows the registry: {n} 台已登记 registered, {len(changes)} 处更新 changed")
    return 0


def _tell_centre(a: argparse.Namespace, prov: Provisioner, accounts: list[Account], by: str) -> None:
    """The registry is saved; the centre's store follows it now (--config), or at the next sync."""
    if all(acc.hours24 is None for acc in accounts):
        return
    if a.config is None:
        print("the centre learns the 24-hour status with `hallfleet provision sync --config CENTRE.toml`")
        return
    for change in centre.push(a.config, accounts, by=by, at=prov.now()):
        print(centre.describe(change))


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
    _apply(a, prov, "the old credentials work")
    return 0


def _revoke(a: argparse.Namespace, prov: Provisioner) -> int:
    account = prov.revoke(parse_target(a.target), a.by, a.reason, compromised=a.compromised)
    print(f"{account.label} revoked by {account.revoked_by}: {account.revoke_reason}")
    _apply(a, prov, "it still logs in")
    return 0


def _broker(a: argparse.Namespace, prov: Provisioner) -> int:
    hall = None
    if a.hall is not None:
        if not a.centre_host:
            raise RegistryError("--hall needs --centre-host: the centre broker's name as in its certificate")
        hall = HallOptions(a.hall, a.centre_host, a.centre_port, a.bridge_auth, a.approved_by, consumer=a.hall_consumer)
    layout = _layout(a, hall is not None)
    files = prov.render_broker(a.out, layout, a.host, hall, a.approved_by)
    for name in files.created_accounts:
        print(f"created {name} (approved by {a.approved_by})")
    if Path(a.out).resolve() == Path(a.conf_dir).resolve():
        print(f"{len(files.written)} files written in place in {a.conf_dir}")
    else:
        print(f"{len(files.written)} files in {a.out}: install them in {a.conf_dir} (owner root, group mosquitto)")
    print(f"Mosquitto runs {layout.file(brokerconf.CONF)} (as /etc/mosquitto/mosquitto.conf, or include it from an")
    print("empty one: it replaces Debian's, Mosquitto refuses a second persistence_location or log file);")
    print("`systemctl reload mosquitto` (SIGHUP) after every render")
    return 0


def _list(a: argparse.Namespace, prov: Provisioner) -> int:
    for acc in sorted(prov.registry.load().accounts, key=lambda x: (x.kind, x.username)):
        expiry = f" cert until {acc.cert_not_after:%Y-%m-%d}" if acc.cert_not_after else ""
        role = f" {acc.role}" if acc.role else ""
        role += " 24h" if acc.hours24 else ""
        print(f"{acc.label:28} {acc.kind}{role} {acc.auth} {acc.state}: approved by {acc.approved_by}{expiry}")
    return 0
