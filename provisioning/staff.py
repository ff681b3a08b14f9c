"""``hallfleet provision staff``: the roster, consent records and face enrolment of one hall's staff.

Face encodings are sensitive personal information (docs/threat-model.md), so enrolment asks for three
things per person: a row in the site's roster, a recorded consent (the signed form's reference,
``staff_consents``), and photos in which the terminal's own quality gates find exactly one face, big and
sharp enough (drivers/face). Photos are read once and dropped unless a keep directory is configured;
only encodings reach the store (``broker/gallery``), and the terminals get them sealed.

One run is one new gallery version for the site, however many people change, so the consumer's
reconcile sends each terminal one delta; a person whose encodings are already enrolled unchanged does
not bump it. Each person is a savepoint of the run's transaction: their consent row, their encodings
and the audit entries commit together or not at all, and a failure of one person (a bad photo, a bad
consent row) never undoes another's. Withdrawing consent revokes the face (and with it the
fingerprint template on the terminals) in the same transaction that records the withdrawal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker import gallery
from broker.attendance.roster import (  # cells read as the roster reads them
    StaffMember,
    cell_date,
    cell_text,
    csv_rows,
    import_roster,
    read_roster,
    xlsx_rows,
)
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import face_gallery, gallery_sites, staff, staff_consents
from drivers.face.config import FaceConfig
from protocol.topics import SEGMENT_RE

PURPOSE = gallery.CONSENT_PURPOSE  # 人脸考勤: the only purpose a consent here covers (the gallery checks it)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_SIDE = 1600  # photos are scaled down to this first: HOG at upsample 1 on a 12-MP phone photo takes seconds
Kind = Literal["enrolled", "unchanged", "skipped", "withdrawn", "failed"]
KIND_ZH: dict[Kind, str] = {
    "enrolled": "已录入",
    "unchanged": "未变化",
    "skipped": "未录入(无同意记录)",
    "withdrawn": "已撤回同意",
    "failed": "失败",
}
KIND_EN: dict[Kind, str] = {
    "enrolled": "enrolled",
    "unchanged": "unchanged",
    "skipped": "skipped (no consent)",
    "withdrawn": "consent withdrawn",
    "failed": "failed",
}

# Consent file field -> accepted headers (compared without spaces, case-insensitively), as roster.py does.
CONSENT_HEADERS: dict[str, tuple[str, ...]] = {
    "site": ("站点", "site"),
    "staff_id": ("工号", "staff_id"),
    "given_at": ("同意日期", "given_at"),
    "evidence": ("凭证", "evidence"),
    "recorded_by": ("记录人", "recorded_by"),
    "withdrawn_at": ("撤回日期", "withdrawn_at"),
}


class StaffProvisionError(ValueError):
    """The run cannot start (bad arguments, an unreadable file header); nothing was changed."""


@dataclass(frozen=True, slots=True)
class Why:
    """A reason in both languages: the CLI prints Chinese first, then English."""

    zh: str
    en: str


class PersonError(Exception):
    """One person (or one file or row) cannot be provisioned; the others go on."""

    def __init__(self, why: Why) -> None:
        super().__init__(why.en)
        self.why = why


@dataclass(frozen=True, slots=True)
class Outcome:
    staff_id: str  # or the file / row when no staff id could be read
    kind: Kind
    why: Why | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ConsentRow:
    staff_id: str
    where: str  # "consent.csv 第 3 行" / "consent.csv row 3"
    where_en: str
    given_at: datetime | None
    evidence: str
    recorded_by: str | None
    withdrawn_at: datetime | None


@dataclass(frozen=True)
class StaffRequest:
    site: str
    by: str
    at: datetime
    zone: ZoneInfo
    roster: Path | None = None
    photos: Path | None = None
    consent: Path | None = None
    keep_photos: Path | None = None
    withdraw: str | None = None
    dry_run: bool = False
    min_shots: int = 2
    within: timedelta = timedelta(hours=24)
    face: FaceConfig = field(default_factory=FaceConfig)


@dataclass
class Report:
    site: str
    dry_run: bool
    version_before: int = 0
    version_after: int = 0
    roster_added: int = 0
    roster_updated: int = 0
    roster_other_sites: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)

    def count(self, kind: Kind) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def lines(self) -> list[str]:
        """The summary, Chinese first, then English."""
        kinds: tuple[Kind, ...] = ("enrolled", "unchanged", "skipped", "withdrawn", "failed")
        zh = "，".join(f"{KIND_ZH[k]} {self.count(k)} 人" for k in kinds)
        en = ", ".join(f"{KIND_EN[k]} {self.count(k)}" for k in kinds)
        head_zh = "(试运行, 未写入) " if self.dry_run else ""
        head_en = "(dry run, nothing written) " if self.dry_run else ""
        version_zh = f"人脸库版本 {self.version_before} -> {self.version_after}"
        version_en = f"gallery version {self.version_before} -> {self.version_after}"
        roster_zh = f"花名册新增 {self.roster_added} 人, 更新 {self.roster_updated} 人"
        roster_en = f"roster: {self.roster_added} added, {self.roster_updated} updated"
        if self.roster_other_sites:
            roster_zh += f", 其他站点 {self.roster_other_sites} 行未导入"
            roster_en += f", {self.roster_other_sites} rows of other sites not imported"
        out = [f"{head_zh}{self.site}: {zh}; {version_zh}; {roster_zh}"]
        out += [f"  {KIND_ZH[o.kind]} {o.staff_id}: {o.why.zh}" for o in self.outcomes if o.why is not None]
        out.append(f"{head_en}{self.site}: {en}; {version_en}; {roster_en}")
        out += [f"  {KIND_EN[o.kind]} {o.staff_id}: {o.why.en}" for o in self.outcomes if o.why is not None]
        return out


# -- photos -------------------------------------------------------------------------------------------
def find_photos(folder: Path) -> dict[str, list[Path]]:
    """staff id -> photos: DIR/<staff_id>.jpg|jpeg|png (one shot) and DIR/<staff_id>/*.jpg|png (several).
    Hidden files and other suffixes (Thumbs.db, notes) are not photos and are left alone."""
    if not folder.is_dir():
        raise StaffProvisionError(f"照片目录 {folder} 不存在 / photo folder {folder} does not exist")
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            shots = [p for p in sorted(entry.iterdir()) if _is_photo(p)]
            if shots:
                found.setdefault(entry.name, []).extend(shots)
        elif _is_photo(entry):
            found.setdefault(entry.stem, []).append(entry)
    return found


def _is_photo(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in PHOTO_SUFFIXES


def encode_photo(path: Path, cfg: FaceConfig) -> np.ndarray:
    """The one face's encoding, through the terminal's quality gates (size, sharpness); PersonError names
    the file otherwise. The pixels live only in this function."""
    import cv2
    from PIL import Image, ImageOps

    from drivers.face.engine import sharpness_of  # the terminal's own measure, so the two gates agree
    from drivers.face.gallery import load_face_recognition

    try:
        with Image.open(path) as im:
            picture = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise PersonError(
            Why(f"{path.name}: 无法读取照片 ({exc})", f"{path.name}: cannot read the photo ({exc})")
        ) from None
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    rgb = np.ascontiguousarray(np.asarray(picture))
    fr = load_face_recognition()
    boxes = fr.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
    if len(boxes) != 1:
        raise PersonError(
            Why(
                f"{path.name}: 照片中找到 {len(boxes)} 张人脸, 应恰好 1 张",
                f"{path.name}: {len(boxes)} faces found; the photo must show exactly one",
            )
        )
    top, _, bottom, _ = boxes[0]
    if bottom - top < cfg.min_face_px:
        raise PersonError(
            Why(
                f"{path.name}: 人脸高 {bottom - top} 像素, 至少需要 {cfg.min_face_px}",
                f"{path.name}: the face is {bottom - top} px high, {cfg.min_face_px} needed",
            )
        )
    sharpness = sharpness_of(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), boxes[0])
    if sharpness < cfg.min_sharpness:
        raise PersonError(
            Why(
                f"{path.name}: 照片模糊 (清晰度 {sharpness:.0f} < {cfg.min_sharpness:.0f})",
                f"{path.name}: blurry (sharpness {sharpness:.0f} < {cfg.min_sharpness:.0f})",
            )
        )
    return np.asarray(fr.face_encodings(rgb, boxes)[0], dtype=np.float64)


def encode_person(staff_id: str, photos: list[Path], cfg: FaceConfig, min_shots: int) -> list[np.ndarray]:
    encodings = [encode_photo(p, cfg) for p in photos]
    if len(encodings) < min_shots:
        raise PersonError(
            Why(
                f"只有 {len(encodings)} 张照片, 录入需要 {min_shots} 张 (可放在目录 {staff_id}/ 下)",
                f"{len(encodings)} photo(s); enrolment needs {min_shots} (put them in a folder {staff_id}/)",
            )
        )
    return encodings


# -- the consent file ---------------------------------------------------------------------------------
def read_consents(path: Path, site: str, zone: ZoneInfo, now: datetime) -> tuple[list[ConsentRow], list[Outcome]]:
    """Rows that read well, and a failure per row that does not (naming the file, row and column)."""
    rows = xlsx_rows(path) if path.suffix.lower() in (".xlsx", ".xlsm") else csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise StaffProvisionError(f"{path.name}: 文件为空 / the file is empty")
    columns = _consent_columns(path, header)
    good: list[ConsentRow] = []
    failed: list[Outcome] = []
    for number, row in enumerate(rows, start=2):
        if all(cell_text(v) == "" for v in row):
            continue
        try:
            good.append(_consent_row(path, number, row, columns, site, zone, now))
        except PersonError as exc:
            index = columns["staff_id"][0]
            who = cell_text(row[index]) if index < len(row) else ""
            failed.append(Outcome(who if SEGMENT_RE.fullmatch(who) else f"{path.name}:{number}", "failed", exc.why))
    return good, failed


def _consent_columns(path: Path, header: list[Any]) -> dict[str, tuple[int, str]]:
    wanted = {alias.lower(): name for name, aliases in CONSENT_HEADERS.items() for alias in aliases}
    columns: dict[str, tuple[int, str]] = {}
    for i, cell in enumerate(header):
        name = wanted.get("".join(cell_text(cell).split()).lower())
        if name is not None and name not in columns:
            columns[name] = (i, cell_text(cell))
    missing = [CONSENT_HEADERS[n][0] for n in ("staff_id", "given_at", "evidence") if n not in columns]
    if missing:
        raise StaffProvisionError(
            f"{path.name} 第 1 行: 缺少列 {'、'.join(missing)} / row 1: missing column(s) {', '.join(missing)}"
        )
    return columns


def _consent_row(
    path: Path,
    number: int,
    row: list[Any],
    columns: dict[str, tuple[int, str]],
    site: str,
    zone: ZoneInfo,
    now: datetime,
) -> ConsentRow:
    where, where_en = f"{path.name} 第 {number} 行", f"{path.name} row {number}"

    def cell(name: str) -> tuple[Any, str]:
        index, header = columns.get(name, (-1, CONSENT_HEADERS[name][0]))
        return (row[index] if 0 <= index < len(row) else None), header

    def fail(header: str, value: Any, zh: str, en: str) -> PersonError:
        return PersonError(
            Why(f"{where}, {header}: {cell_text(value)!r} {zh}", f"{where_en}, {header}: {cell_text(value)!r} {en}")
        )

    value, header = cell("staff_id")
    staff_id = cell_text(value)
    if not SEGMENT_RE.fullmatch(staff_id):
        raise fail(header, value, "不是有效工号", "is not a valid staff id")
    value, header = cell("site")
    if cell_text(value) not in ("", site):
        raise fail(header, value, f"不是本次的站点 {site}", f"is not this run's site {site}")
    moments: dict[str, datetime | None] = {}
    for name in ("given_at", "withdrawn_at"):
        value, header = cell(name)
        if cell_text(value) == "":
            moments[name] = None
            continue
        moment = _moment(value, zone)
        if moment is None:
            raise fail(
                header, value, "不是日期 (应为 YYYY-MM-DD 或 YYYY-MM-DD HH:MM)", "is not a date (YYYY-MM-DD [HH:MM])"
            )
        if moment > now:
            raise fail(header, value, "晚于现在", "is in the future")
        moments[name] = moment
    given, withdrawn = moments["given_at"], moments["withdrawn_at"]
    evidence, evidence_header = cell("evidence")
    if given is None and withdrawn is None:
        raise fail(
            cell("given_at")[1], "", "为空, 应为同意日期 (或填写撤回日期)", "is empty: the date consent was given"
        )
    if given is not None and not cell_text(evidence):
        raise fail(evidence_header, evidence, "为空, 应为签字同意书的编号", "is empty: the signed form's reference")
    if len(cell_text(evidence)) > 200:
        raise fail(evidence_header, evidence, "超过 200 个字符", "is longer than 200 characters")
    if given is not None and withdrawn is not None and withdrawn < given:
        raise fail(
            cell("withdrawn_at")[1], withdrawn.date(), f"早于同意日期 {given.date()}", f"is before {given.date()}"
        )
    recorded_by = cell_text(cell("recorded_by")[0])[:64] or None
    return ConsentRow(staff_id, where, where_en, given, cell_text(evidence), recorded_by, withdrawn)


def _moment(value: Any, zone: ZoneInfo) -> datetime | None:
    """A date (midnight in the site's zone) or a date and time, from a cell as Excel or a person wrote it."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(), zone)
    try:
        parsed = datetime.fromisoformat(cell_text(value).replace("/", "-"))
    except ValueError:
        day = cell_date(value)  # 2026/11/3, 2026.11.3, 2026年11月3日: as the roster reads them
        return None if day is None else datetime.combine(day, time(), zone)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


# -- the run --------------------------------------------------------------------------------------------
@dataclass
class _Person:
    staff_id: str
    consent_row: ConsentRow | None = None
    photos: list[Path] = field(default_factory=list)
    encodings: list[np.ndarray] | None = None
    withdraw_at: datetime | None = None  # withdraw consent (and revoke the face) at this time


async def provision_staff(store: Store, req: StaffRequest) -> Report:
    """Roster, then consent and photos per person, then one transaction for the site's gallery."""
    report = Report(req.site, req.dry_run)
    members = await _roster(store, req, report)
    known = await _stored_staff(store, req.site) | {m.staff_id: m.end_date for m in members}
    people: dict[str, _Person] = {}
    if req.consent is not None:
        await _collect_consents(req, req.consent, known, people, report)
    if req.photos is not None:
        await _collect_photos(req, req.photos, known, people, report)
    if req.withdraw is not None:
        people[req.withdraw] = _Person(req.withdraw, withdraw_at=req.at)
    await _apply(store, req, list(people.values()), report)
    return report


async def _collect_consents(
    req: StaffRequest, path: Path, known: dict[str, date | None], people: dict[str, _Person], report: Report
) -> None:
    rows, failed = await asyncio.to_thread(read_consents, path, req.site, req.zone, req.at)
    report.outcomes += failed
    bad = {o.staff_id for o in failed}
    for row in rows:
        _attach_consent(people, row, known, bad, report)
    for staff_id in bad:
        people.pop(staff_id, None)  # nothing half-done for someone whose consent row is wrong


async def _collect_photos(
    req: StaffRequest, folder: Path, known: dict[str, date | None], people: dict[str, _Person], report: Report
) -> None:
    failed = {o.staff_id for o in report.outcomes if o.kind == "failed"}
    today = req.at.astimezone(req.zone).date()
    for staff_id, photos in (await asyncio.to_thread(find_photos, folder)).items():
        names = ", ".join(p.name for p in photos)
        left = known.get(staff_id)
        if staff_id not in known:
            why = Why(f"{names}: 工号不在 {req.site} 花名册中", f"{names}: staff id not in the {req.site} roster")
            report.outcomes.append(Outcome(staff_id, "failed", why))
        elif left is not None and left < today:  # no biometric data of someone who has left the hall
            why = Why(f"{names}: 已于 {left} 离职, 不录入", f"{names}: left the hall on {left}, not enrolled")
            report.outcomes.append(Outcome(staff_id, "failed", why))
            people.pop(staff_id, None)  # their consent row too: nothing half-done
        elif staff_id not in failed:
            people.setdefault(staff_id, _Person(staff_id)).photos = photos


async def _roster(store: Store, req: StaffRequest, report: Report) -> list[StaffMember]:
    if req.roster is None:
        return []
    everyone = await asyncio.to_thread(read_roster, req.roster)  # RosterError: the whole file is refused
    members = [m for m in everyone if m.site == req.site]
    report.roster_other_sites = len(everyone) - len(members)
    if not req.dry_run:
        report.roster_added, report.roster_updated = await import_roster(store, members, by=req.by, at=req.at)
    return members


async def _stored_staff(store: Store, site: str) -> dict[str, date | None]:
    """staff id -> last day at the hall (None: still there)."""
    rows = await store.fetch(sa.select(staff.c.staff_id, staff.c.end_date).where(staff.c.site == site))
    return {r.staff_id: r.end_date for r in rows}


def _attach_consent(
    people: dict[str, _Person], row: ConsentRow, known: dict[str, date | None], bad: set[str], report: Report
) -> None:
    if row.staff_id not in known:
        why = Why(
            f"{row.where}: 工号 {row.staff_id} 不在花名册中",
            f"{row.where_en}: staff id {row.staff_id} not in the roster",
        )
        report.outcomes.append(Outcome(row.staff_id, "failed", why))
        bad.add(row.staff_id)
        return
    person = people.setdefault(row.staff_id, _Person(row.staff_id))
    if person.consent_row is not None:
        first = person.consent_row
        why = Why(
            f"{row.where}: 工号 {row.staff_id} 与{first.where}重复",
            f"{row.where_en}: staff id repeats {first.where_en}",
        )
        report.outcomes.append(Outcome(row.staff_id, "failed", why))
        bad.add(row.staff_id)
        return
    person.consent_row = row
    person.withdraw_at = row.withdrawn_at


async def _apply(store: Store, req: StaffRequest, people: list[_Person], report: Report) -> None:
    """Encode (outside any transaction: seconds of CPU), then one transaction, one savepoint per person."""
    async with store.engine.connect() as conn:
        consents = await _consents(conn, req.site)
        report.version_before = await gallery.current_version(conn, req.site)
    ready: list[_Person] = []
    for person in people:
        outcome = await _prepare(person, req, consents)
        if outcome is None:
            ready.append(person)
        else:
            report.outcomes.append(outcome)
    version: int | None = None
    async with store.engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await _open_for_savepoints(conn)
            for person in ready:
                try:
                    async with conn.begin_nested():
                        outcome = await _change(conn, person, req, version)
                except (PersonError, gallery.GalleryAdminError, SQLAlchemyError) as exc:
                    why = exc.why if isinstance(exc, PersonError) else Why(f"写入失败: {exc}", f"not stored: {exc}")
                    outcome = Outcome(person.staff_id, "failed", why)
                if outcome.version is not None:
                    version = outcome.version
                report.outcomes.append(outcome)
            report.version_after = version if version is not None else report.version_before
            if req.dry_run:
                await transaction.rollback()
            else:
                await transaction.commit()
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            raise
    if not req.dry_run:
        _keep_or_drop(req, people, report)


async def _open_for_savepoints(conn: AsyncConnection) -> None:
    """Make the transaction real before the first SAVEPOINT. Python's sqlite3 (legacy transaction control)
    sends BEGIN only before a write, so a SAVEPOINT issued first opens the transaction itself and its
    RELEASE commits it: each person would be committed on their own, and a dry run would write. A write
    that changes nothing makes sqlite3 send BEGIN (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html,
    "Serializable isolation / Savepoints / Transactional DDL"); on PostgreSQL it is a no-op."""
    await conn.execute(gallery_sites.update().where(sa.false()).values(version=gallery_sites.c.version))


async def _prepare(person: _Person, req: StaffRequest, consents: list[Any]) -> Outcome | None:
    """Who is not enrolled at all, and the encodings of those who are; None: ready for the store."""
    if person.withdraw_at is not None or not person.photos:
        return None
    if not _will_consent(person, consents):
        return _no_consent(person)
    try:
        person.encodings = await asyncio.to_thread(
            encode_person, person.staff_id, person.photos, req.face, req.min_shots
        )
    except PersonError as exc:
        return Outcome(person.staff_id, "failed", exc.why)
    return None


def _will_consent(person: _Person, consents: list[Any]) -> bool:
    """Consent on record and not withdrawn, or a consent row in this run's file not recorded before (a
    consent in the file that was withdrawn since, e.g. with --withdraw, does not count again)."""
    mine = [c for c in consents if c.staff_id == person.staff_id]
    if any(c.withdrawn_at is None for c in mine):
        return True
    row = person.consent_row
    return row is not None and row.given_at is not None and not any(c.given_at == row.given_at for c in mine)


def _no_consent(person: _Person) -> Outcome:
    names = ", ".join(p.name for p in person.photos)
    return Outcome(
        person.staff_id,
        "skipped",
        Why(f"{names}: 无有效同意记录, 未录入", f"{names}: no consent on record, not enrolled"),
    )


async def _change(conn: AsyncConnection, person: _Person, req: StaffRequest, version: int | None) -> Outcome:
    """One person's consent row, face and audit entries (the caller's savepoint)."""
    if person.withdraw_at is not None:
        return await _withdraw(conn, person, req, version)
    recorded = await _record_consent(conn, person, req)
    if person.encodings is not None and not _will_consent(person, await _consents(conn, req.site)):
        return _no_consent(person)
    if person.encodings is None:  # a consent without photos: recorded, enrolled later
        return Outcome(
            person.staff_id,
            "unchanged",
            None if not recorded else Why("已记录同意, 无照片", "consent recorded, no photos"),
        )
    if await _same_encodings(conn, req.site, person.staff_id, person.encodings):
        return Outcome(person.staff_id, "unchanged")
    v = await gallery.enrol_in(conn, req.site, person.staff_id, person.encodings, by=req.by, at=req.at, version=version)
    return Outcome(person.staff_id, "enrolled", version=v)


async def _record_consent(conn: AsyncConnection, person: _Person, req: StaffRequest) -> bool:
    row = person.consent_row
    if row is None or row.given_at is None:
        return False
    mine = [c for c in await _consents(conn, req.site) if c.staff_id == person.staff_id]
    if any(c.withdrawn_at is None or c.given_at == row.given_at for c in mine):
        return False  # on record already: the same file is read again on every run
    await conn.execute(
        staff_consents.insert().values(
            site=req.site, staff_id=person.staff_id, purpose=PURPOSE, given_at=row.given_at, recorded_at=req.at,
            recorded_by=(row.recorded_by or req.by)[:64], evidence=row.evidence,
        )
    )  # fmt: skip
    detail = {"purpose": PURPOSE, "given_at": row.given_at, "evidence": row.evidence, "source": row.where_en}
    await audit(conn, at=req.at, actor=req.by, action="consent.record", target=f"{req.site}/{person.staff_id}",
                detail=detail)  # fmt: skip
    return True


async def _withdraw(conn: AsyncConnection, person: _Person, req: StaffRequest, version: int | None) -> Outcome:
    at = person.withdraw_at or req.at
    c = staff_consents.c
    recorded = await _record_consent(conn, person, req)  # a file row given and withdrawn: both go on record
    active = [r for r in await _consents(conn, req.site) if r.staff_id == person.staff_id and r.withdrawn_at is None]
    f = face_gallery.c
    enrolled = await conn.scalar(
        sa.select(sa.func.count()).where(f.site == req.site, f.staff_id == person.staff_id, f.revoked_at.is_(None))
    )
    if not active and not enrolled:
        if person.consent_row is not None and not recorded:
            return Outcome(person.staff_id, "unchanged")  # the withdrawal is on record already
        raise PersonError(
            Why("无同意记录, 也未录入人脸: 无可撤回", "no consent on record and no face enrolled: nothing to withdraw")
        )
    if active:
        await conn.execute(
            staff_consents.update()
            .where(c.id.in_([r.id for r in active]))
            .values(withdrawn_at=at, withdrawn_by=req.by[:64])
        )
    await audit(conn, at=req.at, actor=req.by, action="consent.withdraw", target=f"{req.site}/{person.staff_id}",
                detail={"purpose": PURPOSE, "withdrawn_at": at})  # fmt: skip
    v = version
    if enrolled:
        v = await gallery.revoke_in(conn, req.site, person.staff_id, by=req.by, at=req.at, within=req.within,
                                    reason="撤回人脸采集同意 (consent withdrawn)", version=version)  # fmt: skip
    return Outcome(person.staff_id, "withdrawn", version=v)


async def _consents(conn: AsyncConnection, site: str) -> list[Any]:
    """Every consent row of the site, withdrawn or not."""
    c = staff_consents.c
    q = sa.select(c.id, c.staff_id, c.given_at, c.withdrawn_at).where(c.site == site, c.purpose == PURPOSE)
    return list((await conn.execute(q)).all())


async def _same_encodings(conn: AsyncConnection, site: str, staff_id: str, encodings: list[np.ndarray]) -> bool:
    f = face_gallery.c
    blob = await conn.scalar(sa.select(f.encodings).where(f.site == site, f.staff_id == staff_id))
    if blob is None:
        return False
    held = np.frombuffer(blob, dtype=np.float32).reshape(-1, 128)
    new = np.asarray(encodings, dtype=np.float32)
    return held.shape == new.shape and bool(np.allclose(held, new, atol=1e-5))


def _keep_or_drop(req: StaffRequest, people: list[_Person], report: Report) -> None:
    """Photos of people now enrolled go to the keep directory (0600) when one is set; a withdrawal deletes
    what was kept of that person. Without it, nothing is written: the photos were only ever in memory."""
    if req.keep_photos is None:
        return
    enrolled = {o.staff_id for o in report.outcomes if o.kind in ("enrolled", "unchanged")}
    withdrawn = {o.staff_id for o in report.outcomes if o.kind == "withdrawn"}
    for person in people:
        folder = req.keep_photos / req.site / person.staff_id
        if person.staff_id in withdrawn:
            shutil.rmtree(folder, ignore_errors=True)
        elif person.staff_id in enrolled and person.photos:
            report.kept += list(_keep(folder, person.photos))


def _keep(folder: Path, photos: list[Path]) -> Iterator[Path]:
    for level in (*reversed(folder.parents[:2]), folder):  # keep dir, site, person: each 0700 when made here
        if not level.is_dir():
            level.mkdir(mode=0o700, parents=True)
            os.chmod(level, 0o700)  # mkdir's mode is masked by the umask
    for src in photos:
        dst = folder / src.name
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, even briefly
        with os.fdopen(fd, "wb") as out:
            out.write(src.read_bytes())
        os.chmod(dst, 0o600)  # O_CREAT's mode applies only to a new file
        yield dst


# -- status -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StaffStatus:
    staff_id: str
    name: str
    consent: Literal["given", "withdrawn", "none"]
    consent_at: datetime | None
    evidence: str
    gallery: Literal["enrolled", "revoked", "none"]
    gallery_version: int | None
    last_change: datetime | None


async def staff_status(conn: AsyncConnection, site: str) -> list[StaffStatus]:
    """Everyone the site knows of (roster, consent or gallery), by staff id."""
    s, c, f = staff.c, staff_consents.c, face_gallery.c
    names = {r.staff_id: r.name for r in await conn.execute(sa.select(s.staff_id, s.name).where(s.site == site))}
    consents: dict[str, Any] = {}
    for r in await conn.execute(sa.select(staff_consents).where(c.site == site, c.purpose == PURPOSE).order_by(c.id)):
        consents[r.staff_id] = r  # the latest row wins
    faces = {r.staff_id: r for r in await conn.execute(sa.select(face_gallery).where(f.site == site))}
    out = []
    for staff_id in sorted(names.keys() | consents.keys() | faces.keys()):
        cr, fr = consents.get(staff_id), faces.get(staff_id)
        times = [
            t for t in (cr and cr.recorded_at, cr and cr.withdrawn_at, fr and fr.enrolled_at, fr and fr.revoked_at) if t
        ]
        out.append(
            StaffStatus(
                staff_id=staff_id,
                name=names.get(staff_id, ""),
                consent="none" if cr is None else ("withdrawn" if cr.withdrawn_at else "given"),
                consent_at=None if cr is None else (cr.withdrawn_at or cr.given_at),
                evidence="" if cr is None else cr.evidence,
                gallery="none" if fr is None else ("revoked" if fr.revoked_at else "enrolled"),
                gallery_version=None if fr is None else (fr.version_removed or fr.version_added),
                last_change=max(times) if times else None,
            )
        )
    return out
