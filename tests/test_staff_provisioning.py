"""``hallfleet provision staff``: roster, consent records and faces enrolled from real photos, on SQLite and
PostgreSQL; one gallery version per run, nothing for people without consent, withdrawal revokes, photos
dropped unless kept (0600), bad photos and rows named; end to end to a simulated attendance terminal."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from broker import gallery
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import audit_log, commands, face_gallery, gallery_sites, staff, staff_consents
from drivers.face.gallery import encode_image
from hallfleet.cli import main
from runtime.clock import SystemClock
from tests.conftest import RunningConsumer
from tests.support.faces import framed, photo, photo_path, side_by_side
from tests.support.procs import wait_for

SITE = "qp"
ROSTER = (
    "站点,工号,姓名,窗口,AB岗,入职日期\n"
    + "".join(f"qp,{s},员工{s[-2:]},窗口{s[-1]},A,2024-01-01\n" for s in ("S0001", "S0002", "S0003", "S0004", "S0005"))
    + "wz,W0001,外站,1,A,2024-01-01\n"
)  # another site's row: not imported by a qp run


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config(tmp_path: Path, url: str, **gallery_extra: Any) -> Path:
    lines = [f'[store]\nurl = "{url}"\n[gallery]\nmin_shots = 1\nkeys_dir = "{tmp_path / "keys"}"']
    lines += [f'{k} = "{v}"' for k, v in gallery_extra.items()]
    return write(tmp_path / "centre.toml", "\n".join(lines) + "\n")


def photos(folder: Path, people: dict[str, list[str]]) -> Path:
    """DIR/<staff>.jpg for one shot, DIR/<staff>/<name> for several: copies of the real test photos."""
    folder.mkdir(parents=True, exist_ok=True)
    for staff_id, names in people.items():
        if len(names) == 1:
            src = photo_path(names[0])
            shutil.copy(src, folder / f"{staff_id}{src.suffix}")
            continue
        (folder / staff_id).mkdir()
        for name in names:
            shutil.copy(photo_path(name), folder / staff_id / photo_path(name).name)
    return folder


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["provision", "staff", "--site", SITE, "--config", str(cfg), "--by", "wm.chen", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def query(url: str, q: Any) -> list[Any]:
    async def go() -> list[Any]:
        store = await Store.open(url)
        try:
            return await store.fetch(q)
        finally:
            await store.close()

    return asyncio.run(go())


def version(url: str, site: str = SITE) -> int:
    rows = query(url, sa.select(gallery_sites.c.version).where(gallery_sites.c.site == site))
    return rows[0].version if rows else 0


def faces(url: str) -> dict[str, Any]:
    return {r.staff_id: r for r in query(url, sa.select(face_gallery).where(face_gallery.c.site == SITE))}


def actions(url: str) -> list[tuple[str, str]]:
    rows = query(url, sa.select(audit_log.c.action, audit_log.c.target).order_by(audit_log.c.id))
    return [(r.action, r.target) for r in rows if r.action.startswith(("gallery.", "consent."))]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hall(tmp_path: Path) -> Path:
    """The window management section's files: roster, consent forms, photos (S0001 two shots, S0002 and
    S0003 one each; S0003 has signed nothing)."""
    write(tmp_path / "in" / "roster.csv", ROSTER)
    write(
        tmp_path / "in" / "consent.csv",
        "工号,同意日期,凭证\nS0001,2026-11-02,QP-2026-001\nS0002,2026/11/03,QP-2026-002\n",
    )
    photos(tmp_path / "in" / "photos", {"S0001": ["obama", "obama2"], "S0002": ["biden"], "S0003": ["grace_hopper"]})
    return tmp_path / "in"


def provision_args(hall: Path, *extra: str) -> list[str]:
    files = ["--roster", str(hall / "roster.csv"), "--photos", str(hall / "photos"), "--consent"]
    return [*files, str(hall / "consent.csv"), *extra]


def test_photos_with_consent_become_encodings_in_one_new_version_and_nothing_else_is_written(
    store_url: str, tmp_path: Path, hall: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, store_url)

    async def other_site() -> None:
        store = await Store.open(store_url)
        now = SystemClock().now()
        async with store.engine.begin() as conn:  # what provision staff records first: no consent, no face
            await conn.execute(staff_consents.insert().values(
                site="wz", staff_id="W0001", purpose=gallery.CONSENT_PURPOSE, given_at=now, recorded_at=now,
                recorded_by="wz.admin", evidence="同意书"))  # fmt: skip
        await gallery.enrol(store, "wz", "W0001", [np.zeros(128)], by="wz.admin", at=now, min_shots=1)
        await store.close()

    asyncio.run(other_site())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(hall)
    rc, out, _ = run(capsys, cfg, *provision_args(hall))

    assert rc == 0, out
    enrolled = faces(store_url)
    assert sorted(enrolled) == ["S0001", "S0002"], "S0003 has photos but no consent"
    assert (enrolled["S0001"].shots, enrolled["S0002"].shots) == (2, 1)
    assert {r.version_added for r in enrolled.values()} == {1}
    assert (version(store_url), version(store_url, "wz")) == (1, 1), "one version for the run; wz untouched"
    shots = np.frombuffer(enrolled["S0001"].encodings, dtype=np.float32).reshape(-1, 128)
    probe = encode_image(np.asarray(photo("obama3")))[0]
    assert np.linalg.norm(shots - probe, axis=1).min() < 0.5, "real encodings: a third photo of the same man matches"
    assert np.linalg.norm(shots - encode_image(np.asarray(photo("biden")))[0], axis=1).min() > 0.6

    mine = staff_consents.c.site == SITE  # wz's own consent (above) is wz's
    consents = query(store_url, sa.select(staff_consents).where(mine).order_by(staff_consents.c.staff_id))
    assert [(c.staff_id, c.purpose, c.evidence, c.recorded_by, c.withdrawn_at) for c in consents] == [
        ("S0001", "face_attendance", "QP-2026-001", "wm.chen", None),
        ("S0002", "face_attendance", "QP-2026-002", "wm.chen", None),
    ]
    assert consents[1].given_at.isoformat() == "2026-11-02T16:00:00+00:00", "a date is midnight in the hall's zone"
    assert sorted(actions(store_url)) == sorted(
        [("gallery.enrol", "wz/W0001"), ("consent.record", "qp/S0001"), ("consent.record", "qp/S0002"),
         ("gallery.enrol", "qp/S0001"), ("gallery.enrol", "qp/S0002")]
    )  # fmt: skip
    roster = query(store_url, sa.select(staff.c.site, staff.c.staff_id))
    assert sorted(r.staff_id for r in roster if r.site == SITE) == ["S0001", "S0002", "S0003", "S0004", "S0005"]
    assert "W0001" not in [r.staff_id for r in roster], "a qp run imports qp's rows only"

    zh, en = out.index("已录入 2 人"), out.index("enrolled 2")
    assert zh < en, "Chinese first, then English"
    assert "未录入(无同意记录) 1 人" in out and "skipped (no consent) 1" in out
    assert "S0003.jpg: no consent on record" in out
    assert list(work.iterdir()) == [], "photos are read and dropped: nothing in the working directory"
    assert tree(hall) == before, "the section's own files are left as they were"
    assert not (tmp_path / "keys").exists()
    written = {p.name for p in tmp_path.iterdir()} - {"in", "work", "centre.toml"}
    assert written <= {"store.db", "store.db-wal", "store.db-shm"}, written

    rc, out, _ = run(capsys, cfg, *provision_args(hall))
    assert rc == 0 and "未变化 2 人" in out and "unchanged 2" in out
    assert version(store_url) == 1, "the same photos again: no new version for the terminals"
    assert len(query(store_url, sa.select(staff_consents).where(mine))) == 2, "the same file again: no second record"


def test_withdrawn_consent_revokes_the_face_in_a_new_version_and_is_recorded(
    store_url: str, tmp_path: Path, hall: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, store_url)
    assert run(capsys, cfg, *provision_args(hall))[0] == 0
    assert version(store_url) == 1

    rc, out, _ = run(capsys, cfg, "--withdraw", "S0002")
    assert rc == 0, out
    face = faces(store_url)["S0002"]
    assert face.encodings is None and face.version_removed == 2 and face.revoked_by == "wm.chen"
    assert face.revoke_by is not None, "the revocation has its deadline on every terminal"
    assert version(store_url) == 2
    (consent,) = query(store_url, sa.select(staff_consents).where(staff_consents.c.staff_id == "S0002"))
    assert consent.withdrawn_at is not None and consent.withdrawn_by == "wm.chen"
    assert actions(store_url)[-2:] == [("consent.withdraw", "qp/S0002"), ("gallery.revoke", "qp/S0002")]

    # the section runs the same files again: the old signed form does not bring the face back
    rc, out, _ = run(capsys, cfg, *provision_args(hall))
    assert rc == 0, out
    assert faces(store_url)["S0002"].encodings is None
    assert "S0002.jpg: no consent on record" in out
    assert version(store_url) == 2

    # a withdrawal in the consent file revokes too
    write(hall / "consent.csv", "工号,同意日期,凭证,撤回日期\nS0001,2026-11-02,QP-2026-001,2026-11-20 09:30\n")
    rc, out, _ = run(capsys, cfg, "--consent", str(hall / "consent.csv"))
    assert rc == 0 and "已撤回同意 1 人" in out
    assert faces(store_url)["S0001"].encodings is None and version(store_url) == 3
    (consent,) = query(store_url, sa.select(staff_consents).where(staff_consents.c.staff_id == "S0001"))
    assert consent.withdrawn_at.isoformat() == "2026-11-20T01:30:00+00:00"
    rc, out, _ = run(capsys, cfg, "--consent", str(hall / "consent.csv"))
    assert rc == 0 and version(store_url) == 3, "a withdrawal already on record changes nothing"

    rc, out, _ = run(capsys, cfg, "--status")
    assert rc == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "已撤回 withdrawn 2026-11-20" in lines["S0001"] and "已撤销 revoked" in lines["S0001"]
    assert "已撤回 withdrawn" in lines["S0002"] and lines["S0002"].split()[-3] == "2"
    assert "无 none" in lines["S0003"] and "未录入 none" in lines["S0003"]
    assert "gallery version 3" in out.splitlines()[0]

    rc, out, _ = run(capsys, cfg, "--withdraw", "S0004")
    assert rc == 1 and "S0004: no consent on record and no face enrolled: nothing to withdraw" in out


def test_kept_photos_are_0600_and_a_withdrawal_deletes_them(
    store_url: str, tmp_path: Path, hall: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "kept"
    cfg = config(tmp_path, store_url)
    rc, out, _ = run(capsys, cfg, *provision_args(hall, "--keep-photos", str(keep)))
    assert rc == 0, out
    kept = sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*") if p.is_file())
    assert kept == ["qp/S0001/obama.jpg", "qp/S0001/obama2.jpg", "qp/S0002/S0002.jpg"], "S0003 gave no consent"
    for path in keep.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert (keep / "qp/S0002/S0002.jpg").read_bytes() == photo_path("biden").read_bytes()

    cfg = config(tmp_path, store_url, keep_photos_dir=keep)  # the config setting does the same
    assert run(capsys, cfg, "--withdraw", "S0002")[0] == 0
    assert not (keep / "qp" / "S0002").exists(), "consent withdrawn: the kept photos go too"
    assert (keep / "qp" / "S0001" / "obama.jpg").exists()


def test_bad_photos_and_rows_are_named_and_each_person_is_all_or_nothing(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roster = "工号,站点,入职日期,离职日期\n" + "".join(f"S00{n:02d},qp,2024-01-01,\n" for n in range(1, 11))
    write(tmp_path / "roster.csv", roster + "S0011,qp,2024-01-01,2026-09-30\n")  # has left the hall
    folder = tmp_path / "photos"
    photos(folder, {"S0008": ["grace_hopper"], "S0005": ["biden"], "S0011": ["obama3"]})
    write(folder / "S0001.jpg", "this is not a JPEG")
    cv2.imwrite(str(folder / "S0002.jpg"), side_by_side("obama", "biden"))
    cv2.imwrite(str(folder / "S0003.png"), np.full((480, 640, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "S0004.jpg"), framed("obama", face_px=60))
    cv2.imwrite(str(folder / "S0010.jpg"), cv2.GaussianBlur(framed("obama2", face_px=200), (0, 0), 6))
    shutil.copy(photo_path("obama"), folder / "S0099.jpg")  # nobody of that id works here
    write(folder / "notes.txt", "not a photo, not a person")
    good = [f"S00{n:02d},2026-11-01,QP-{n}," for n in (1, 2, 3, 4, 8, 10, 11)]  # rows 2-8
    bad = [
        "S0005,2026-02-30,QP-5,",  # row 9: no such day (and S0005's photo is good)
        "S0006,2099-01-01,QP-6,",  # row 10: signed in the future
        "S0007,2026-11-10,QP-7,2026-11-01",  # row 11: withdrawn before it was given
        "S0098,2026-11-01,QP-98,",  # row 12: not on the roster
        "S0009,2026-11-01,,",  # row 13: no evidence of the signed form
    ]
    consent = "\n".join(["工号,同意日期,凭证,撤回日期", *good, *bad]) + "\n"
    write(tmp_path / "consent.csv", consent)
    cfg = config(tmp_path, store_url)
    args = [
        "--roster",
        str(tmp_path / "roster.csv"),
        "--photos",
        str(folder),
        "--consent",
        str(tmp_path / "consent.csv"),
    ]
    rc, out, _ = run(capsys, cfg, *args)

    assert rc == 1, "failures exit 1 after the rest is done"
    failed = {line.split()[1].rstrip(":"): line for line in out.splitlines() if line.startswith("  failed ")}
    assert "S0001.jpg: cannot read the photo" in failed["S0001"]
    assert "S0002.jpg: 2 faces found" in failed["S0002"]
    assert "S0003.png: 0 faces found" in failed["S0003"]
    assert "S0004.jpg: the face is" in failed["S0004"] and "80 needed" in failed["S0004"]
    assert "S0010.jpg: blurry" in failed["S0010"]
    assert "S0099.jpg: staff id not in the qp roster" in failed["S0099"]
    assert "consent.csv row 9, 同意日期: '2026-02-30' is not a date" in failed["S0005"]
    assert "consent.csv row 10, 同意日期: '2099-01-01' is in the future" in failed["S0006"]
    assert "consent.csv row 11, 撤回日期" in failed["S0007"] and "is before 2026-11-10" in failed["S0007"]
    assert "consent.csv row 12: staff id S0098 not in the roster" in failed["S0098"]
    assert "consent.csv row 13, 凭证: '' is empty" in failed["S0009"]
    assert "S0011.jpg: left the hall on 2026-09-30, not enrolled" in failed["S0011"]
    assert "notes" not in out
    assert "失败 S0005: consent.csv 第 9 行, 同意日期: '2026-02-30' 不是日期" in out, "and the same in Chinese first"

    assert list(faces(store_url)) == ["S0008"], "only the good photo with a good consent"
    recorded = sorted(r.staff_id for r in query(store_url, sa.select(staff_consents.c.staff_id)))
    assert recorded == ["S0008"], "a person whose photo or row failed has nothing recorded: fix it, run again"
    assert version(store_url) == 1


def test_a_dry_run_reports_and_writes_nothing(
    store_url: str, tmp_path: Path, hall: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, store_url)
    rc, out, _ = run(capsys, cfg, *provision_args(hall, "--dry-run", "--keep-photos", str(tmp_path / "kept")))
    assert rc == 0 and "(dry run, nothing written)" in out and "enrolled 2" in out and "0 -> 1" in out
    assert faces(store_url) == {} and version(store_url) == 0
    assert query(store_url, sa.select(staff_consents)) == [] and query(store_url, sa.select(staff)) == []
    assert not (tmp_path / "kept").exists()


async def test_the_terminal_receives_the_version_the_run_made_and_loses_the_face_on_withdrawal(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, store_url: str, tmp_path: Path, hall: Path, running: Any
) -> None:
    from agent.agent import Agent
    from tests.test_attendance import role, terminal_config

    agent: Agent = running(terminal_config(mosquitto, tmp_path))  # writes tmp_path/keys/qp.att-1.key
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the terminal to connect")
    cfg = config(tmp_path, store_url)
    store = consumer.store
    keys = gallery.GalleryCentreConfig(keys_dir=tmp_path / "keys")

    async def holds(v: int) -> bool:
        await consumer.consumer.send_commands(await gallery.reconcile(store, keys, SystemClock().now()))
        async with store.engine.connect() as conn:
            return (await gallery.held_versions(conn, SITE)).get("att-1") == v

    cli = ["provision", "staff", "--site", SITE, "--config", str(cfg), "--by", "wm.chen"]
    assert await asyncio.to_thread(main, [*cli, *provision_args(hall)]) == 0
    await wait_for(lambda: holds(1), 30, "the terminal to hold version 1")
    held = role(agent).held.entries
    assert sorted(held) == ["S0001", "S0002"]
    (row,) = await store.fetch(sa.select(face_gallery.c.encodings).where(face_gallery.c.staff_id == "S0001"))
    assert np.allclose(held["S0001"], np.frombuffer(row.encodings, dtype=np.float32).reshape(-1, 128), atol=1e-6)

    assert await asyncio.to_thread(main, [*cli, "--withdraw", "S0001"]) == 0
    await wait_for(lambda: holds(2), 30, "the revocation on the terminal")
    assert sorted(role(agent).held.entries) == ["S0002"]
    updates = await store.fetch(sa.select(commands.c.args).where(commands.c.name == "gallery_update"))
    assert len(updates) == 2, "one update per version: the run's two people travel together"
    assert json.loads(updates[0].args)["version"] == 1


def test_a_consent_workbook_reads_excel_dates_and_names_a_bad_cell(tmp_path: Path) -> None:
    """The section keeps consent forms in Excel: date cells arrive as datetimes, typed ones as text."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from openpyxl import Workbook

    from provisioning.staff import read_consents

    wb = Workbook()
    sheet = wb.active
    assert sheet is not None
    sheet.append(["工号", "同意日期", "凭证", "记录人"])
    sheet.append(["S0001", datetime(2026, 11, 2, 9, 30), "QP-1", "李科长"])
    sheet.append([1002, "2026年11月3日", "QP-2", None])  # a staff id typed as a number; a date as Chinese text
    sheet.append(["S0003", "11月3日", "QP-3", None])  # no year
    wb.save(tmp_path / "consent.xlsx")
    rows, failed = read_consents(tmp_path / "consent.xlsx", SITE, ZoneInfo("Asia/Shanghai"), datetime.now(UTC))
    assert [
        (r.staff_id, r.given_at.astimezone(UTC).isoformat() if r.given_at else None, r.recorded_by) for r in rows
    ] == [("S0001", "2026-11-02T01:30:00+00:00", "李科长"), ("1002", "2026-11-02T16:00:00+00:00", None)]
    assert [(o.staff_id, o.why.en if o.why else "") for o in failed] == [
        ("S0003", "consent.xlsx row 4, 同意日期: '11月3日' is not a date (YYYY-MM-DD [HH:MM])")
    ]


async def test_a_store_failure_for_one_person_undoes_their_consent_row_and_nobody_elses(
    store_url: str, hall: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S0002's enrolment fails in the store after their consent row was written: the row goes with it
    (one savepoint per person), S0001 stays enrolled with their consent, and the run is still one version."""
    from zoneinfo import ZoneInfo

    from provisioning import staff as provisioning_staff

    real_enrol = gallery.enrol_in

    async def enrol_in(conn: Any, site: str, staff_id: str, *args: Any, **kwargs: Any) -> int:
        version = await real_enrol(conn, site, staff_id, *args, **kwargs)
        if staff_id == "S0002":
            await conn.execute(sa.text("SELECT * FROM no_such_table"))  # a real error from the real store
        return version

    monkeypatch.setattr(gallery, "enrol_in", enrol_in)
    store = await Store.open(store_url)
    try:
        req = provisioning_staff.StaffRequest(
            site=SITE, by="wm.chen", at=SystemClock().now(), zone=ZoneInfo("Asia/Shanghai"),
            roster=hall / "roster.csv", photos=hall / "photos", consent=hall / "consent.csv", min_shots=1,
        )  # fmt: skip
        report = await provisioning_staff.provision_staff(store, req)
        assert [(o.staff_id, o.kind) for o in report.outcomes if o.kind in ("enrolled", "failed")] == [
            ("S0001", "enrolled"),
            ("S0002", "failed"),
        ]
        failure = next(o.why for o in report.outcomes if o.staff_id == "S0002")
        assert failure is not None and "no_such_table" in failure.en
        assert report.version_after == 1
        assert [r.staff_id for r in await store.fetch(sa.select(face_gallery.c.staff_id))] == ["S0001"]
        assert [r.staff_id for r in await store.fetch(sa.select(staff_consents.c.staff_id))] == ["S0001"]
        audited = await store.fetch(sa.select(audit_log.c.action).where(audit_log.c.target == "qp/S0002"))
        assert [r.action for r in audited] == ["staff.add"], "the roster import only: no consent or gallery entry"
        async with store.engine.connect() as conn:
            assert await gallery.current_version(conn, SITE) == 1
    finally:
        await store.close()
