"""The attendance terminal at the hall entrance: face, fingerprint and 随申码 QR punches.

Every accepted punch is an ``attendance.punch`` event committed to the outbox before the person is told
"打卡成功", so a punch taken offline reaches the store exactly once later (nothing else is needed for
offline operation). A repeat within ``repeat_s`` collapses into the first (people punch twice to be
sure); a refusal is an ``attendance.punch_rejected`` with the reason, so a missing punch can be
explained. Every finger press is answered: a finger that matches no template is refused as ``unknown`` (the
person is pointed to the QR code), once per press, not once per scan while it rests on the sensor. Nothing
biometric leaves the terminal: events carry pseudonymous staff ids and scores; face encodings live only in
the sealed gallery (agent/gallery.py), fingerprint templates only in the fingerprint module's own flash.

Enrolment: the reader lock is held from choosing the page to recording who it belongs to, and a cancelled
enrolment (the command's timeout) still waits for the reader's thread and deletes what it may have stored, so
the module never holds a template the mapping does not name (a punch would be refused as "page N is not
mapped") and no scan runs while the library is being written.

Revocation: a gallery update that removes someone also deletes their fingerprint template and puts
them on the terminal's revoked list, so no method punches for them any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from agent.commands.registry import CommandFailed, CommandSpec, NoArgs, Registry
from agent.device import DeviceContext
from agent.gallery import GalleryConfig, GalleryStore, Held
from config.base import Section
from drivers.camera import CameraConfig
from drivers.face.config import (
    FaceChallenge,
    FaceConfig,
    FaceMatch,
    FaceReject,
    FaceSiteSettings,
    LivenessEvidence,
)
from drivers.fingerprint.errors import CaptureError, FingerError
from drivers.fingerprint.watch import WATCH
from drivers.fingerprint.zfm import EnrolStep, FingerMatch, NoMatch, ZfmConfig, ZfmReader
from drivers.qr.keyboard import EvdevScanner, QrScannerConfig, SimulatedScanner
from drivers.qr.validators import QrConfig, build_validator
from protocol.envelope import Frozen
from protocol.events import LIVENESS_MEASURE_MAX, AttendancePunch, AttendanceRejected, GalleryHeld, PunchLiveness
from protocol.gallery import GalleryError, GalleryUpdate

if TYPE_CHECKING:
    from drivers.face.engine import FaceEngine
    from drivers.fingerprint.sim import SimulatedZfm

log = logging.getLogger(__name__)

KV_FINGERS = "attendance.fingers"  # page id -> staff id (the mapping; templates stay in the module)
KV_REVOKED = "attendance.revoked"


class SimulatedFingerprintConfig(Section):
    type: Literal["sim"] = "sim"
    capacity: int = Field(default=300, ge=1, description="Library pages of the simulated module")


class SimulatedQrConfig(Section):
    type: Literal["sim"] = "sim"
    gap_s: float = Field(default=0.5, gt=0, description="As the real scanner's decoder")


FingerprintConfig = Annotated[ZfmConfig | SimulatedFingerprintConfig, Field(discriminator="type")]
ScannerConfig = Annotated[QrScannerConfig | SimulatedQrConfig, Field(discriminator="type")]


class AttendanceConfig(Section):
    camera: CameraConfig | None = Field(default=None, description="Face punches: the entrance camera")
    face: FaceConfig = Field(default_factory=FaceConfig, description="Face matching and its gates")
    gallery: GalleryConfig | None = Field(default=None, description="The sealed face gallery (needed with a camera)")
    fingerprint: FingerprintConfig | None = Field(default=None, description="ZFM/R30x reader over USB, or 'sim'")
    qr: ScannerConfig | None = Field(default=None, description="HID keyboard QR scanner (evdev), or 'sim'")
    qr_validator: QrConfig | None = Field(default=None, description="How QR codes map to staff (per region)")
    repeat_s: float = Field(default=60, ge=0, description="A punch by the same person within this is the same punch")
    reject_repeat_s: float = Field(default=10, ge=0, description="The same refusal is reported once per this")
    fingerprint_poll_s: float = Field(default=0.3, gt=0, le=5, description="How often the finger sensor is read")
    fingerprint_lift_s: float = Field(
        default=1.0, ge=0, le=5, description="After a finger punch the sensor rests this long: the finger is on it"
    )

    @model_validator(mode="after")
    def _complete(self) -> AttendanceConfig:
        if self.camera is not None and self.gallery is None:
            raise ValueError("gallery: face punches need the sealed gallery (path, key_file)")
        if self.qr is not None and self.qr_validator is None:
            raise ValueError("qr_validator: a QR scanner needs the region's validator")
        if self.camera is None and self.fingerprint is None and self.qr is None:
            raise ValueError("camera, fingerprint or qr: an attendance terminal needs at least one")
        return self


@dataclass(frozen=True, slots=True)
class Feedback:
    """What the person at the terminal is told (screen, voice; here the log)."""

    ok: bool
    text: str
    staff_id: str | None = None
    prompt: bool = False  # an instruction (enrolment's "press", "lift"), neither a punch nor a refusal
    text_en: str = ""  # the English line under the Chinese one, where the screen has one (refusals)


class LogOutput:
    """The console twin of the terminal's screen and speaker. ``expect`` lets the demo and the tests act when
    the screen asks (a person presses when told to), instead of after a guessed sleep."""

    def __init__(self) -> None:
        self.shown: list[Feedback] = []
        self._expected: list[tuple[Callable[[Feedback], bool], asyncio.Future[Feedback]]] = []

    def show(self, fb: Feedback) -> None:
        self.shown.append(fb)
        del self.shown[:-100]
        log.info("terminal: %s %s", "✓" if fb.ok else "✗", fb.text)
        for match, seen in list(self._expected):
            if not seen.done() and match(fb):
                seen.set_result(fb)

    def expect(self, match: Callable[[Feedback], bool]) -> asyncio.Future[Feedback]:
        """The next shown Feedback that ``match``es, as a future: take it before causing what shows it."""
        seen: asyncio.Future[Feedback] = asyncio.get_running_loop().create_future()
        entry = (match, seen)
        self._expected.append(entry)
        seen.add_done_callback(lambda _: self._expected.remove(entry))  # done or given up on: no longer held
        return seen


class FingerEnrol(Frozen):
    staff_id: str = Field(min_length=1, max_length=64)


REASON_ZH = {
    "unknown": "未识别, 请重试或换用其他方式",
    "not_live": "未通过活体检测, 请离开镜头后重新打卡",
    "revoked": "已停用, 请联系窗口管理科",
    "expired": "二维码已过期, 请刷新",
    "replayed": "二维码已使用, 请刷新",
    "unknown_staff": "未登记的二维码",
    "device_error": "设备故障, 请换用其他方式并报告",
}
REASON_EN = {
    "unknown": "Not recognised: try again or use another way",
    "not_live": "Liveness check failed: step away from the camera and try again",
    "revoked": "Deactivated: contact the window management section",
    "expired": "QR code expired: refresh it",
    "replayed": "QR code already used: refresh it",
    "unknown_staff": "QR code not registered",
    "device_error": "Device fault: use another way and report it",
}
# A finger that matches nobody is pointed to the QR code, which every member of staff carries (the face may not be
# enrolled either), by the name of the region's app (drivers/qr/validators.py); a region not named here gets the
# plain word, and a terminal without a QR scanner the general advice.
QR_APP = {"shanghai": ("随申码", "Suishenma QR code"), "chongqing": ("渝快政", "Yukuaizheng QR code")}
QR_APP_OTHER = ("二维码", "QR code")


def refusal_text(method: str, reason: str, qr_app: tuple[str, str] | None = None) -> tuple[str, str]:
    """What the screen says for a refusal, in Chinese and English; ``qr_app`` names the terminal's QR code, if any."""
    if method == "fingerprint" and reason == "unknown" and qr_app is not None:
        return f"未识别，请重试或使用{qr_app[0]}", f"Not recognised: try again or use your {qr_app[1]}"
    return REASON_ZH.get(reason, "请重试"), REASON_EN.get(reason, "Please try again")


# The site's challenge (FaceSiteSettings.challenge), asked on the screen as an instruction, not as a refusal: the person
# in front of the camera is recognised and has only to do it.
CHALLENGE_ZH = {"blink": "请眨眼", "turn": "请缓慢向左或向右转头, 并眨眼"}
CHALLENGE_EN = {"blink": "Please blink", "turn": "Please turn your head slowly left or right, and blink"}


def enrol_prompt_zh(step: EnrolStep) -> str:
    """What the screen asks at each step of a fingerprint enrolment."""
    if step.wait_for == "lift":
        return "请抬起手指"
    return "请按压手指 (登记)" if step.capture == 1 else "请再次按压同一手指"


def _liveness(e: LivenessEvidence | None) -> PunchLiveness | None:
    """The engine's evidence as the wire carries it, each measure clamped into the contract's bounds: a degenerate
    frame's number must not cost the punch it belongs to. The challenge is the sitting's (what its screen asked),
    not the terminal's settings at the time of the outcome, which the centre may have changed meanwhile."""
    if e is None:
        return None

    def cap(value: float, top: float = LIVENESS_MEASURE_MAX) -> float:
        return min(max(value, 0.0), top)

    return PunchLiveness(
        challenge=e.challenge, ear_open=cap(e.ear_open), drop=cap(e.drop, 1.0), eyes=cap(e.eyes),
        blink_s=None if e.blink_s is None else cap(e.blink_s, 3600), rigid=cap(e.rigid), light=cap(e.light),
        texture=cap(e.texture), blur=cap(e.blur), turn=cap(e.turn), frames=e.frames, unsteady=e.unsteady,
        sitting_s=cap(e.sitting_s, 3600),
    )  # fmt: skip


class AttendanceRole:
    def __init__(self, device: DeviceContext, cfg: AttendanceConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.output = LogOutput()
        self.store = GalleryStore(cfg.gallery, device.site, device.device) if cfg.gallery else None
        self.held = Held(0, {})
        self.engine: FaceEngine | None = None
        self.face = cfg.face  # cfg.face with the centre's site settings in place once they arrive (apply_site)
        self.finger_sim: SimulatedZfm | None = None
        self.finger = self._finger_reader(cfg.fingerprint)
        self.qr_sim: SimulatedScanner | None = None
        self.validator = build_validator(cfg.qr_validator) if cfg.qr_validator is not None else None
        self.qr_app = QR_APP.get(cfg.qr_validator.region.lower(), QR_APP_OTHER) if cfg.qr_validator else None
        self._last_punch: dict[str, float] = {}
        self._last_reject: dict[tuple[str, str, str | None], float] = {}
        self._fingers: dict[int, str] = {}
        self._revoked: set[str] = set()
        self._finger_lock = asyncio.Lock()  # scans and commands, one at a time (the watch's GenImg skips a held reader)
        self._loading = asyncio.Lock()
        self._loaded = False

    def _finger_reader(self, cfg: ZfmConfig | SimulatedFingerprintConfig | None) -> ZfmReader | None:
        if cfg is None:
            return None
        if isinstance(cfg, SimulatedFingerprintConfig):
            from drivers.fingerprint.sim import SimulatedZfm  # a pyusb backend: only for a configured twin

            self.finger_sim = SimulatedZfm(library_size=cfg.capacity)
            real = ZfmConfig(
                vendor_id=self.finger_sim.vendor_id, product_id=self.finger_sim.product_id, capacity=cfg.capacity
            )
            return ZfmReader(real, backend=self.finger_sim)
        return ZfmReader(cfg)

    def apply_site(self, site: FaceSiteSettings | None) -> None:
        """The site's face settings from the centre's desired config (already validated by agent/desired.py), or
        None: back to this terminal's own. The engine takes them from its next frame; called before the applier
        reports config.applied, so an applied report means the terminal runs them."""
        face = self.cfg.face if site is None else self.cfg.face.with_site(site)
        if face == self.face:
            return
        self.face = face
        if self.engine is not None:
            self.engine.set_config(face)
        whose = "the site's" if site is not None else "this terminal's"
        log.info("face settings (%s): threshold %.2f, liveness %s, challenge %s, blink_drop %.2f", whose,
                 face.threshold, face.liveness, face.challenge, face.limits.blink_drop)  # fmt: skip

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("gallery_update", GalleryUpdate, self._cmd_gallery_update, timeout_s=300))
        registry.register(CommandSpec("fingerprint_enrol", FingerEnrol, self._cmd_finger_enrol, timeout_s=60))
        registry.register(CommandSpec("fingerprint_remove", FingerEnrol, self._cmd_finger_remove))
        registry.register(CommandSpec("gallery_report", NoArgs, self._cmd_gallery_report))

    # -- running -----------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._ready()
        await self._report_gallery()
        async with asyncio.TaskGroup() as tg:
            if self.cfg.camera is not None:
                tg.create_task(self._face_loop(self.cfg.camera), name="face")
            if self.finger is not None:
                tg.create_task(self._finger_loop(), name="fingerprint")
            if self.cfg.qr is not None:
                tg.create_task(self._qr_loop(self.cfg.qr), name="qr")

    async def _ready(self) -> None:
        """The saved state (finger mapping, revoked list, sealed gallery) loaded, once. run() and every command
        come through here first: the command runner starts beside run(), so a command may come first, and a load
        that ended after an enrolment replaced the mapping that enrolment had just made; the next enrolment then
        took the same page and wrote over that person's template, whose finger matched nothing from then on."""
        async with self._loading:
            if not self._loaded:
                await self._load_state()
                self._loaded = True

    async def _load_state(self) -> None:
        fingers = await self.device.state.kv_get(KV_FINGERS)
        self._fingers = {int(k): v for k, v in json.loads(fingers).items()} if fingers else {}
        revoked = await self.device.state.kv_get(KV_REVOKED)
        self._revoked = set(json.loads(revoked)) if revoked else set()
        if self.store is not None:
            try:
                self.held = await asyncio.to_thread(self.store.load)
            except GalleryError as exc:  # the key changed or the file was altered: start empty, say so
                log.error("the sealed face gallery does not open (%s): face punches wait for a full gallery", exc)

    async def _save_state(self) -> None:
        await self.device.state.kv_set(KV_FINGERS, json.dumps({str(k): v for k, v in self._fingers.items()}))
        await self.device.state.kv_set(KV_REVOKED, json.dumps(sorted(self._revoked)))

    async def _report_gallery(self) -> None:
        held = GalleryHeld(version=self.held.version, staff=len(self.held.entries), fingerprints=len(self._fingers))
        await self.device.emit("attendance.gallery", held)

    # -- the three ways to punch ---------------------------------------------------------------------
    async def _face_loop(self, camera_cfg: CameraConfig) -> None:
        from drivers.camera import Camera
        from drivers.face.engine import FaceEngine
        from drivers.face.gallery import FaceGallery

        self.engine = FaceEngine(self.face, FaceGallery(self.held.entries))
        async for frame in Camera(camera_cfg).frames():
            result = await asyncio.to_thread(self.engine.process, frame, time.monotonic())
            if isinstance(result, FaceMatch):
                evidence = _liveness(result.liveness)
                await self.punch(result.staff_id, "face", max(0.0, 1.0 - result.distance), liveness=evidence)
            elif isinstance(result, FaceChallenge):
                zh, en = CHALLENGE_ZH[result.kind], CHALLENGE_EN[result.kind]
                self.output.show(Feedback(True, zh, result.staff_id, prompt=True, text_en=en))
            elif isinstance(result, FaceReject) and result.reason not in ("no_face", "cooldown"):
                evidence = _liveness(result.liveness)
                await self.reject(
                    "face", result.reason, detail=result.detail, staff_id=result.staff_id, liveness=evidence
                )

    async def _finger_loop(self) -> None:
        """Wait for a finger, scan it, and answer every press: a match punches, a finger matching no template is
        refused (screen and one ``punch_rejected``, reason ``unknown``). A refused finger is not answered again until
        the sensor was seen empty, so a finger held on the sensor is one refusal, not one per poll; a match is always
        answered, since the next person may press before the sensor was seen empty. The waiting is the process's
        finger watch (drivers/fingerprint/watch.py): an idle sensor is polled every ``fingerprint_poll_s`` in its
        thread and this loop sleeps until a finger is there."""
        reader = self.finger
        assert reader is not None
        refused = False  # the finger on the sensor was refused and has not been lifted since
        while True:
            try:
                if await WATCH.press(reader, self.cfg.fingerprint_poll_s):
                    refused = False  # the sensor was empty meanwhile: a new press
                async with self._finger_lock:
                    seen = await asyncio.to_thread(reader.scan)
            except CaptureError:  # a smudged or partial print: the person presses again
                if not refused:  # a refused finger still held is not asked to press again
                    self.output.show(Feedback(False, "请重新按压手指", text_en="Press your finger again"))
                await asyncio.sleep(self.cfg.fingerprint_poll_s)
                continue
            except FingerError as exc:
                await self.reject("fingerprint", "device_error", detail=str(exc)[:200])
                await asyncio.sleep(5)  # the reader re-finds the device on its next call
                continue
            if isinstance(seen, FingerMatch):
                refused = False
                await self._finger_punch(seen)
                await asyncio.sleep(self.cfg.fingerprint_lift_s)  # one punch per touch
            elif isinstance(seen, NoMatch):
                if not refused:
                    await self.reject("fingerprint", "unknown", detail=_no_match_detail(seen))
                refused = True
            else:
                refused = False  # lifted between the watch's look and the scan
            await asyncio.sleep(self.cfg.fingerprint_poll_s)  # the finger still on the sensor is looked at next poll

    async def _finger_punch(self, match: FingerMatch) -> None:
        staff = self._fingers.get(match.page_id)
        if staff is None:
            await self.reject("fingerprint", "unknown_staff", detail=f"page {match.page_id} is not mapped")
        else:
            await self.punch(staff, "fingerprint", float(match.score))

    async def _qr_loop(self, cfg: QrScannerConfig | SimulatedQrConfig) -> None:
        if isinstance(cfg, SimulatedQrConfig):
            self.qr_sim = SimulatedScanner()
            scanner = EvdevScanner(
                QrScannerConfig(device="sim", grab=False, gap_s=cfg.gap_s), source=self.qr_sim.events
            )
        else:
            scanner = EvdevScanner(cfg)
        validator = self.validator
        assert validator is not None
        async for code in scanner.codes():
            result = validator.validate(code, self.device.clock.now())
            del code  # the raw code is personal data: keep it no longer than the check
            if result.staff_id is not None:
                await self.punch(result.staff_id, "qr", None)
            else:
                await self.reject("qr", result.reason or "malformed")

    # -- outcomes ------------------------------------------------------------------------------------
    async def punch(
        self,
        staff_id: str,
        method: Literal["face", "fingerprint", "qr"],
        score: float | None,
        liveness: PunchLiveness | None = None,
    ) -> bool:
        """Take one punch; returns whether it was new (a repeat inside repeat_s is the same punch)."""
        if staff_id in self._revoked:
            await self.reject(method, "revoked", staff_id=staff_id)
            return False
        now = self.device.clock.monotonic()
        last = self._last_punch.get(staff_id)
        if last is not None and now - last < self.cfg.repeat_s:
            self.output.show(Feedback(True, "已打卡", staff_id))
            return False
        offline = not self.device.link_up()
        await self.device.emit(
            "attendance.punch",
            AttendancePunch(staff_id=staff_id, method=method, score=score, offline=offline, liveness=liveness),
        )
        self._last_punch[staff_id] = now
        self.output.show(Feedback(True, f"打卡成功 {self.device.clock.now():%H:%M}", staff_id))
        return True

    async def reject(self, method: Literal["face", "fingerprint", "qr"], reason: str, **extra: Any) -> None:
        text, text_en = refusal_text(method, reason, self.qr_app if self.cfg.qr is not None else None)
        self.output.show(Feedback(False, text, extra.get("staff_id"), text_en=text_en))
        now = self.device.clock.monotonic()
        key = (method, reason, extra.get("staff_id"))  # per person: the centre pairs a refusal with what follows
        if now - self._last_reject.get(key, float("-inf")) < self.cfg.reject_repeat_s:
            return
        self._last_reject[key] = now
        await self.device.emit("attendance.punch_rejected", AttendanceRejected(method=method, reason=reason, **extra))

    # -- commands --------------------------------------------------------------------------------------
    async def _cmd_gallery_update(self, update: GalleryUpdate) -> dict[str, Any]:
        if self.store is None:
            raise CommandFailed("this terminal has no face gallery configured")
        await self._ready()
        try:
            self.held, revoked = await asyncio.to_thread(self.store.apply, self.held, update)
        except GalleryError as exc:
            raise CommandFailed(str(exc)) from None
        if self.engine is not None:
            from drivers.face.gallery import FaceGallery

            gallery = FaceGallery(self.held.entries)
            gallery.version = self.held.version
            self.engine.set_gallery(gallery)
        for staff in revoked:  # every way this person could punch goes, not just the face
            await self._forget_finger(staff)
        self._revoked = (self._revoked | set(revoked)) - set(self.held.entries)
        await self._save_state()
        await self._report_gallery()
        return {"version": self.held.version, "staff": len(self.held.entries), "revoked": len(revoked)}

    async def _cmd_gallery_report(self, _args: NoArgs) -> dict[str, Any]:
        await self._ready()
        await self._report_gallery()
        return {"version": self.held.version, "staff": len(self.held.entries)}

    async def _cmd_finger_enrol(self, args: FingerEnrol) -> dict[str, Any]:
        reader = self._need_finger()
        await self._ready()
        async with self._finger_lock:  # held to the mapping: no scan meets a page stored but not yet mapped
            used = set(self._fingers)
            page = next((p for p in range(reader.cfg.capacity) if p not in used), None)
            if page is None:
                raise CommandFailed("the fingerprint library is full")
            await self._forget_finger_locked(args.staff_id)
            try:
                await self._enrol_page(reader, page)
            except FingerError as exc:
                await self._save_state()  # the person's old pages went
                raise CommandFailed(f"enrolment failed: {exc}") from None
            self._fingers[page] = args.staff_id
            self._revoked.discard(args.staff_id)
            await self._save_state()
        return {"page": page}

    async def _enrol_page(self, reader: ZfmReader, page: int) -> None:
        """reader.enroll in a worker thread this coroutine never outlives. Cancelled (the command timed out), it
        calls the enrolment off and still waits for the thread, so the reader lock is not let go while the
        module's library may be written; failed or cancelled, the page is deleted (it was free), since a Store
        whose ack was lost may have written it."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def prompt(step: EnrolStep) -> None:  # from the reader's thread
            loop.call_soon_threadsafe(self.output.show, Feedback(True, enrol_prompt_zh(step), prompt=True))

        work = asyncio.ensure_future(asyncio.to_thread(reader.enroll, page, prompt=prompt, cancel=cancel))
        try:
            await asyncio.shield(work)
        except BaseException:
            cancel.set()
            await _outlast(work)
            await _outlast(asyncio.ensure_future(asyncio.to_thread(_clear_page, reader, page)))
            raise

    async def _cmd_finger_remove(self, args: FingerEnrol) -> dict[str, Any]:
        self._need_finger()
        await self._ready()
        removed = await self._forget_finger(args.staff_id)
        await self._save_state()
        return {"removed": removed}

    async def _forget_finger(self, staff_id: str) -> int:
        async with self._finger_lock:
            return await self._forget_finger_locked(staff_id)

    async def _forget_finger_locked(self, staff_id: str) -> int:
        pages = [p for p, s in self._fingers.items() if s == staff_id]
        for page in pages:
            if self.finger is not None:
                await _outlast(asyncio.ensure_future(asyncio.to_thread(_clear_page, self.finger, page)))
            del self._fingers[page]
        return len(pages)

    def _need_finger(self) -> ZfmReader:
        if self.finger is None:
            raise CommandFailed("this terminal has no fingerprint reader configured")
        return self.finger


def _no_match_detail(seen: NoMatch) -> str:
    """Which of the module's answers the refusal was, for the technician: words only, no page and no score, so the
    wire says nothing about whose template came closest."""
    if seen.score is None:
        return "the module found no matching template"
    return "the closest template scored under min_score"


def _clear_page(reader: ZfmReader, page: int) -> None:
    """Delete one page; a reader that fails here is left to its next call (the page is not mapped, so a
    template left on it is refused, and the next enrolment writes over it)."""
    try:
        reader.delete(page)
    except FingerError as exc:
        log.warning("fingerprint page %d not deleted: %s", page, exc)


async def _outlast(work: asyncio.Future[Any]) -> None:
    """Wait until ``work`` (a worker thread's future) has ended, through any cancellation of the caller: a thread
    cannot be stopped, and what it does to the reader must be over before the reader lock is let go. Its outcome
    is the caller's to judge, so it is taken and dropped here."""
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):  # wait() neither raises work's error nor cancels it
            await asyncio.wait([work])
    if not work.cancelled():
        work.exception()
