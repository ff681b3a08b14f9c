"""Per-region QR attendance codes: is this code valid now, and whose is it?

Regions use different apps (随申码 in Shanghai, 渝快政 in Chongqing, ...), so a provider is chosen
per site through ``QrConfig``, a union on ``type`` ready for more providers.

``pattern`` is the generic provider. The 随申码 payload format is not public: each site configures
the regex its codes match (named group ``id`` for the personal id, optionally ``ts`` for the time
the code was generated and ``region`` for a region token). The tests use an invented structure,
``SSM1:<id>:<unix ts>:<sig>``; it is not the real format.

Privacy (requirements §11.7): a code carries a personal id. The staff map holds only
sha256(salt + id) next to a pseudonymous staff id; the validator keeps only hashes of codes (for
replay) and logs a short hash of the code, never the code or the id.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from config.base import ConfigError, Section, secret_path

log = logging.getLogger(__name__)

Reason = Literal["malformed", "expired", "unknown_staff", "wrong_region", "replayed"]
FUTURE_TOLERANCE_S = 30.0  # phone and terminal clocks differ a little; a code from further ahead is refused
REPLAY_CAPACITY = 4096  # accepted codes remembered at once; far above a hall's punches in max_age_s
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_STAFF_ID = re.compile(r"\S{1,64}")  # protocol.events: 1-64 characters; a map line splits on whitespace


@dataclass(frozen=True, slots=True)
class QrResult:
    """Accepted: ``staff_id`` set, ``reason`` None. Refused: ``staff_id`` None and a reason."""

    staff_id: str | None
    reason: Reason | None

    @property
    def ok(self) -> bool:
        return self.staff_id is not None


class QrValidator(Protocol):
    def validate(self, code: str, now: datetime) -> QrResult:
        """Check ``code`` as scanned at ``now`` (aware); a code is accepted once."""
        ...


class PatternQrConfig(Section):
    type: Literal["pattern"] = Field(default="pattern", description="Provider selector: codes matched by a regex")
    region: str = Field(min_length=1, description='The region whose app makes these codes ("shanghai"), for logs')
    pattern: str = Field(
        description="Regex the whole code must match, with a named group `id` (the personal id), optionally "
        "`ts` (when the code was made) and `region`; the app's format is site configuration, not built in"
    )
    region_codes: list[str] = Field(
        default_factory=list, description="Values of the `region` group accepted here; others are wrong_region"
    )
    ts_format: Literal["unix", "unix_ms", "%Y%m%d%H%M%S"] = Field(
        default="unix", description="How the `ts` group is written: epoch seconds, epoch milliseconds or local time"
    )
    timezone: str = Field(default="Asia/Shanghai", description="Zone of a %Y%m%d%H%M%S timestamp")
    max_age_s: float = Field(
        default=120, gt=0, le=86_400, description="Older codes are refused (a screenshot of an earlier code)"
    )
    staff_map: Path = Field(
        description='File of lines "<sha256 hex of salt+id> <staff_id>" (staff_map_line makes them); re-read '
        "when it changes"
    )
    salt_file: Path = Field(
        description="Secret salt of the staff map hashes; a relative path is looked up in $CREDENTIALS_DIRECTORY"
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            groups = re.compile(value).groupindex
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "id" not in groups:
            raise ValueError("needs a named group for the personal id, (?P<id>...)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _region_group(self) -> PatternQrConfig:
        has_group = "region" in re.compile(self.pattern).groupindex
        if has_group != bool(self.region_codes):
            raise ValueError("region_codes and a (?P<region>...) group in pattern go together")
        return self


def id_hash(salt: bytes, personal_id: str) -> str:
    return hashlib.sha256(salt + personal_id.encode()).hexdigest()


def staff_map_line(salt: bytes, personal_id: str, staff_id: str) -> str:
    """One staff map line for enrolment tooling: the personal id goes in, only its salted hash comes out."""
    if not personal_id:
        raise ValueError("personal_id is empty")
    if not _STAFF_ID.fullmatch(staff_id):
        raise ValueError("staff_id must be 1-64 characters without spaces")
    return f"{id_hash(salt, personal_id)} {staff_id}"


def read_salt(path: Path) -> bytes:
    """The salt file's bytes without surrounding whitespace (editors add a newline)."""
    try:
        salt = secret_path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"qr salt_file {path}: {exc.strerror}") from None
    if not salt:
        raise ConfigError(f"qr salt_file {path} is empty: put a long random secret in it")
    return salt


def parse_staff_map(path: Path) -> dict[str, str]:
    """id hash -> staff id. Errors name the file and line, never the line's content."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"qr staff_map {path}: {exc.strerror}") from None
    staff: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2 or not _HEX64.fullmatch(parts[0]) or not _STAFF_ID.fullmatch(parts[1]):
            raise ConfigError(f"qr staff_map {path}:{number}: expected '<sha256 hex> <staff_id>'")
        digest = parts[0].lower()
        if staff.setdefault(digest, parts[1]) != parts[1]:
            raise ConfigError(f"qr staff_map {path}:{number}: this id is already mapped to another staff id")
    return staff


class StaffMap:
    """The staff map file, re-read when it changes: enrolment rewrites it, and a roster change must
    not need a restart. A broken rewrite keeps the previous map (and says so once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._staff = parse_staff_map(path)

    def lookup(self, digest: str) -> str | None:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._staff = parse_staff_map(self.path)
            except ConfigError as exc:
                log.error("%s; keeping the previous staff map", exc)
        return self._staff.get(digest)

    def __len__(self) -> int:
        return len(self._staff)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino


class PatternQrValidator:
    """Structure (fullmatch), region, freshness, replay, then the staff map. ``evicted`` counts
    remembered codes dropped early because the replay memory was full."""

    def __init__(self, cfg: PatternQrConfig) -> None:
        self.cfg = cfg
        self._rx = re.compile(cfg.pattern)
        self._zone = ZoneInfo(cfg.timezone)
        self._salt = read_salt(cfg.salt_file)
        self._staff = StaffMap(cfg.staff_map)
        self._seen: OrderedDict[str, float] = OrderedDict()  # sha256 of an accepted code -> when it expires
        self.evicted = 0
        if "ts" not in self._rx.groupindex:
            log.warning("qr %s: pattern has no (?P<ts>...) group, so a screenshot of a code is accepted", cfg.region)

    def validate(self, code: str, now: datetime) -> QrResult:
        t = _epoch(now)
        self._forget(t)
        digest = hashlib.sha256(code.encode()).hexdigest()
        match = self._rx.fullmatch(code)
        if match is None or not match["id"]:
            return self._refuse(digest, "malformed")
        reason, expires = self._check(match, t)
        if reason is None and digest in self._seen:
            reason = "replayed"
        staff_id = self._staff.lookup(id_hash(self._salt, match["id"])) if reason is None else None
        if reason is None and staff_id is None:
            reason = "unknown_staff"
        if reason is not None:
            return self._refuse(digest, reason)
        self._remember(digest, expires)
        log.info("qr %s (%s) accepted: staff %s", digest[:10], self.cfg.region, staff_id)
        return QrResult(staff_id, None)

    def _check(self, match: re.Match[str], t: float) -> tuple[Reason | None, float]:
        """Region and freshness; on success, when the code stops being valid (then it can be forgotten)."""
        groups = self._rx.groupindex
        if "region" in groups and match["region"] not in self.cfg.region_codes:
            return "wrong_region", t
        if "ts" not in groups:
            return None, t + self.cfg.max_age_s  # no time in the code: refuse it again for max_age_s
        made = _parse_ts(match["ts"], self.cfg.ts_format, self._zone)
        if made is None:
            return "malformed", t
        if t - made > self.cfg.max_age_s or made - t > FUTURE_TOLERANCE_S:
            return "expired", t
        return None, made + self.cfg.max_age_s

    def _refuse(self, digest: str, reason: Reason) -> QrResult:
        log.info("qr %s (%s) refused: %s", digest[:10], self.cfg.region, reason)
        return QrResult(None, reason)

    def _remember(self, digest: str, expires: float) -> None:
        if len(self._seen) >= REPLAY_CAPACITY:
            self._seen.popitem(last=False)
            self.evicted += 1
            log.warning("qr replay memory full (%d codes): forgot the oldest early", REPLAY_CAPACITY)
        self._seen[digest] = expires

    def _forget(self, t: float) -> None:
        """Drop codes that have expired (they are refused as expired now). Insertion order is nearly
        expiry order; an entry behind a later one just stays a little longer."""
        while self._seen and next(iter(self._seen.values())) < t:
            self._seen.popitem(last=False)


def _epoch(now: datetime) -> float:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (runtime.clock gives aware times)")
    return now.timestamp()


def _parse_ts(text: str | None, fmt: str, zone: ZoneInfo) -> float | None:
    """Seconds since the epoch, or None when the text is not a time in ``fmt``."""
    if not text:
        return None
    if fmt in ("unix", "unix_ms"):
        if not text.isascii() or not text.isdigit() or len(text) > 16:
            return None
        return int(text) / (1000 if fmt == "unix_ms" else 1)
    try:
        return datetime.strptime(text, fmt).replace(tzinfo=zone).timestamp()
    except ValueError:
        return None


QrConfig = Annotated[PatternQrConfig, Field(discriminator="type")]
# An explicit registry: a new region's provider is a config model + class, added here.
_PROVIDERS: dict[type[Section], Callable[[Any], QrValidator]] = {PatternQrConfig: PatternQrValidator}


def build_validator(cfg: QrConfig) -> QrValidator:
    """The validator for a configured provider; ConfigError (naming the file) when its files are unusable."""
    return _PROVIDERS[type(cfg)](cfg)
