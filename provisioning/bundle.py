"""The install bundle of one device: everything its first boot needs, in a directory or a .tar.gz.

    {site}.{device}/
      first-boot.sh            installs the venv, hallfleet, the unit and the credentials; starts the agent
      agent.toml               the agent's config (no secrets: they arrive through LoadCredential=)
      hallfleet-agent.service  the repository's unit, with this device's LoadCredential= lines
      hallfleet-update.service the updater's unit (the update command starts it; docs/updates.md)
      50-hallfleet-agent.rules polkit rules (start the updater, reboot; kiosks: restart their app)
      credentials/             mqtt-password or mqtt-cert + mqtt-key, mqtt-ca, gallery-key (attendance)
      wheels/                  the hallfleet wheel, when given

Without a wheel or an index URL the bundle is credentials and configuration only: first-boot.sh installs them
and restarts the agent already installed on the device (a re-issued password, a device imaged with hallfleet).

The bundle holds the device's secret: it is written 0700/0600 and belongs on the device only as long as
first-boot.sh runs.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError

from agent.config import AgentConfig
from protocol.gallery import key_to_text, new_key
from protocol.signing import SIGN_KEY_CREDENTIAL
from provisioning.credentials import write_file
from provisioning.devices import DeviceAccess, device_access
from provisioning.first_boot import SCRIPT
from provisioning.operations import Secrets
from provisioning.registry import Account, RegistryError, Role

UNIT = "hallfleet-agent.service"
POLKIT_RULES = "50-hallfleet-agent.rules"
UPDATE_UNIT = "hallfleet-update.service"
CREDENTIALS_SOURCE = Path("/etc/hallfleet/credentials")
# Where systemd puts LoadCredential= files for the unit ($CREDENTIALS_DIRECTORY). TLS paths in the agent's
# config are absolute (runtime/settings.py looks up only passwords in $CREDENTIALS_DIRECTORY).
CREDENTIALS_RUN = Path("/run/credentials") / UNIT
STATE_DIR = Path("/var/lib/hallfleet")
REPO_SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
# The centre keeps each terminal's gallery key here, as `hallfleet gallery key` does (broker/gallery.py).
GALLERY_KEYS_DIR = Path("/etc/hallfleet/gallery-keys")
# Roles whose hardware section the agent requires. Those without a default below have none that makes sense, so
# it comes from --hardware: a rating pad's window and keypad, a queue device's kind and queue PC, a door
# controller's or locker board's serial port and bus address, a patrol handheld's scanner.
SECTION_ROLES = ("attendance", "kiosk", "rating", "queue", "door", "locker", "patrol")
DEFAULT_HARDWARE: dict[str, str] = {
    "attendance": (
        "# The entrance camera; add [attendance.fingerprint] and [attendance.qr] as fitted (--hardware FILE).\n"
        "[attendance.camera]\nsource = 0\n\n"
        f'[attendance.gallery]\npath = "{STATE_DIR}/gallery.sealed"\nkey_file = "gallery-key"\n'
    ),
    "kiosk": "# Add [kiosk.receipt], [kiosk.a4] and [kiosk.usage] for its printers (--hardware FILE).\n[kiosk]\n",
}
RESERVED_KEYS = {"site", "device", "role", "mqtt", "outbox"}


@dataclass(frozen=True, slots=True)
class BundleOptions:
    """Where hallfleet comes from on the device, its hardware, and the templates."""

    wheel: Path | None = None
    index_url: str | None = None
    hardware: Path | None = None
    unit_template: Path = REPO_SYSTEMD / UNIT
    polkit_template: Path = REPO_SYSTEMD / "hallfleet-agent.polkit.rules"
    app_unit: str = "kiosk-app.service"
    gallery_keys_dir: Path = GALLERY_KEYS_DIR
    tar: bool = False


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def credentials(account: Account, secrets: Secrets, opts: BundleOptions) -> dict[str, bytes]:
    """The files under credentials/, by LoadCredential= name."""
    files = {"mqtt-ca": secrets.ca_pem}
    if secrets.password is not None:
        files["mqtt-password"] = (secrets.password + "\n").encode()
    if secrets.cert is not None:
        files["mqtt-cert"] = secrets.cert.cert_pem
        files["mqtt-key"] = secrets.cert.key_pem
    if secrets.sign_key is not None:  # the agent signs its critical events with it (protocol/signing.py)
        files[SIGN_KEY_CREDENTIAL] = (secrets.sign_key + "\n").encode()
    if account.role == "attendance":
        files["gallery-key"] = (gallery_key(account, opts.gallery_keys_dir) + "\n").encode()
    return files


def gallery_key(account: Account, keys_dir: Path) -> str:
    """The terminal's gallery key, shared with the centre and stored where the consumer looks for it.

    A rotation keeps it (a new key would make the terminal's sealed gallery unreadable); a device provisioned
    anew, e.g. the replacement of a stolen terminal under the same id, gets a new one, so the thief's copy opens
    nothing the centre seals from then on (the new terminal holds no gallery and is sent a full one)."""
    path = keys_dir / f"{account.username}.key"
    if account.rotated_at is not None and path.exists():
        return path.read_text().strip()
    text = key_to_text(new_key())
    write_file(path, text + "\n", 0o600)
    return text


def agent_toml(account: Account, secrets: Secrets, port: int, hardware: str | None) -> str:
    assert account.site is not None and account.device is not None and account.role is not None
    role = account.role
    lines = [
        f"# hallfleet agent of {account.label} ({account.role}), approved by {account.approved_by}.",
        "# Rendered by `hallfleet provision`; secrets are not here: systemd's LoadCredential= provides them.",
        f"site = {_toml_str(account.site)}",
        f"device = {_toml_str(account.device)}",
        f"role = {_toml_str(role)}",
        "",
        hardware if hardware is not None else DEFAULT_HARDWARE.get(role, ""),
        "[mqtt]",
        f"host = {_toml_str(account.broker_host or '')}",
        f"port = {port}",
        f"username = {_toml_str(account.username)}",
    ]
    if secrets.password is not None:
        lines.append("# password: $CREDENTIALS_DIRECTORY/mqtt-password")
    lines += ["", "[mqtt.tls]", f"ca_file = {_toml_str(str(CREDENTIALS_RUN / 'mqtt-ca'))}"]
    if secrets.cert is not None:
        lines.append(f"cert_file = {_toml_str(str(CREDENTIALS_RUN / 'mqtt-cert'))}")
        lines.append(f"key_file = {_toml_str(str(CREDENTIALS_RUN / 'mqtt-key'))}")
    lines += ["", "[outbox]", f"path = {_toml_str(str(STATE_DIR / 'outbox.db'))}"]
    return "\n".join(lines) + "\n"


def check_config(text: str) -> AgentConfig:
    """``text`` as the agent will load it; each problem names its key (door.controller.port.path: ...)."""
    data = tomllib.loads(text)
    role = data.get("role")
    if role in SECTION_ROLES and role not in data:
        raise RegistryError(f"role {role!r} needs its [{role}] section in the --hardware file")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"the --hardware file does not make a valid {role} config: {problems}") from None


def preview(role: Role, hardware: str | None) -> AgentConfig:
    """The config a ``role`` device would get from ``hardware``, checked before anything is issued."""
    body = hardware if hardware is not None else DEFAULT_HARDWARE.get(role, "")
    return check_config(f'site = "preflight"\ndevice = "preflight"\nrole = {_toml_str(role)}\n\n{body}')


def read_hardware(path: Path | None) -> str | None:
    """A TOML file with the role's hardware sections; it may not set what the bundle owns."""
    if path is None:
        return None
    text = path.read_text()
    try:
        keys = set(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not TOML ({exc})") from None
    if clash := sorted(keys & RESERVED_KEYS):
        raise RegistryError(f"{path}: {', '.join(clash)} are set by the bundle; keep only the hardware sections")
    return text.rstrip("\n") + "\n"


def unit_text(template: str, names: list[str], access: DeviceAccess) -> str:
    """The repository's unit with one LoadCredential= per credential of this device, and only the devices (and
    their groups) its hardware needs in place of the template's DeviceAllow= and SupplementaryGroups= lines."""
    load = [f"LoadCredential={n}:{CREDENTIALS_SOURCE / n}" for n in names]
    lines = _replace(template.splitlines(), ("LoadCredential=",), load)
    return "\n".join(_replace(lines, ("SupplementaryGroups=", "DeviceAllow="), access.unit_lines())) + "\n"


def _replace(lines: list[str], prefixes: tuple[str, ...], new: list[str]) -> list[str]:
    """``lines`` with those starting with ``prefixes`` replaced by ``new``, where the first of them stood."""
    at = [i for i, line in enumerate(lines) if line.startswith(prefixes)]
    if not at:
        raise RegistryError(f"the unit template has no {' or '.join(prefixes)} line to replace")
    kept = [line for i, line in enumerate(lines) if i not in at]
    return kept[: at[0]] + new + kept[at[0] :]


def first_boot(account: Account, opts: BundleOptions, polkit: bool) -> str:
    """The script with this device's values set after ``set -euo pipefail``."""
    values = {
        "SITE": account.site or "",
        "DEVICE": account.device or "",
        "ROLE": account.role or "none",
        "INDEX_URL": opts.index_url or "",
        "WHEEL": opts.wheel.name if opts.wheel else "",
        "REQUIREMENT": f"hallfleet=={_version()}",
        "EXTRAS": "face" if account.role == "attendance" else "",
        "POLKIT_RULES": POLKIT_RULES if polkit else "",
        "UPDATE_UNIT": UPDATE_UNIT,
    }
    block = "".join(f"readonly {k}={shlex.quote(v)}\n" for k, v in values.items())
    marker = "set -euo pipefail\n"
    head, _, body = SCRIPT.partition(marker)
    return f"{head}{marker}\n{block}{body}"


def _version() -> str:
    try:
        return metadata.version("hallfleet")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def preflight(out: Path, username: str, opts: BundleOptions, role: Role) -> None:
    """Everything that could stop the bundle, checked before credentials are issued (none is left orphaned)."""
    if opts.wheel is not None and not opts.wheel.is_file():
        raise RegistryError(f"--wheel {opts.wheel}: no such file")
    target = Path(out) / username
    if target.exists() or target.with_name(f"{username}.tar.gz").exists():
        raise RegistryError(f"{target} exists: move the old bundle away (it holds an old secret)")
    _template(opts.unit_template)
    hardware = read_hardware(opts.hardware)
    if hardware is None and role in SECTION_ROLES and role not in DEFAULT_HARDWARE:
        raise RegistryError(f"a {role} device needs --hardware FILE with its [{role}] section")
    device_access(preview(role, hardware))  # a serial port whose device class the unit cannot grant: refused


def write_bundle(out: Path, account: Account, secrets: Secrets, opts: BundleOptions, port: int) -> Path:
    """Write the bundle as ``out/{site}.{device}/`` (or ``.tar.gz``); returns its path."""
    assert account.role is not None
    preflight(out, account.username, opts, account.role)
    if not opts.tar:
        target = Path(out) / account.username
        _fill(target, account, secrets, opts, port)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / account.username
        _fill(staged, account, secrets, opts, port)
        return _tarball(staged, Path(out))


def _fill(d: Path, account: Account, secrets: Secrets, opts: BundleOptions, port: int) -> None:
    d.mkdir(parents=True, mode=0o700)
    creds = credentials(account, secrets, opts)
    for name, data in creds.items():
        write_file(d / "credentials" / name, data, 0o600)
    (d / "credentials").chmod(0o700)
    toml = agent_toml(account, secrets, port, read_hardware(opts.hardware))
    access = device_access(check_config(toml))  # what the agent will load: a broken --hardware fails here
    write_file(d / "agent.toml", toml, 0o644)
    unit = unit_text(_template(opts.unit_template), sorted(creds), access)
    write_file(d / UNIT, unit, 0o644)
    write_file(d / UPDATE_UNIT, _template(REPO_SYSTEMD / UPDATE_UNIT), 0o644)
    # Every device may start its updater and reboot; only a kiosk may restart an application unit.
    app_unit = opts.app_unit if account.role == "kiosk" else ""
    rules = _template(opts.polkit_template).replace(
        'var APP_UNIT = "kiosk-app.service";', f"var APP_UNIT = {json.dumps(app_unit)};"
    )
    if f"var APP_UNIT = {json.dumps(app_unit)};" not in rules:
        raise RegistryError(f"{opts.polkit_template}: no `var APP_UNIT = ...;` line to set the kiosk's unit in")
    write_file(d / POLKIT_RULES, rules, 0o644)
    polkit = True
    if opts.wheel is not None:
        (d / "wheels").mkdir(mode=0o755)
        shutil.copyfile(opts.wheel, d / "wheels" / opts.wheel.name)
    write_file(d / "first-boot.sh", first_boot(account, opts, polkit), 0o755)


def _template(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise RegistryError(f"cannot read {path} ({exc}): give the repository's file with --unit / --polkit") from None


def _tarball(staged: Path, out: Path) -> Path:
    """A .tar.gz (mode 0600: it holds the secret) whose members keep their modes, owned by root."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{staged.name}.tar.gz"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.touch(mode=0o600)
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(staged, arcname=staged.name, filter=_root_owned)
    tmp.replace(path)
    return path


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
