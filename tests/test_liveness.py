"""Liveness against pictures: attack videos made from real photos (tests/support/liveness_media.py), written as
MJPG files and played through the real camera path (Camera on a file: cv2.VideoCapture, the file's own
timeline, 5 fps) into the engine, as the terminal runs them. And genuine sittings, whose blink is synthesised
by warping the lids along the landmarks: what that proves and what it does not is in liveness_media's
docstring.

Pinned: no attack punches and each is refused once with its numbers; a blink punches within 1.5 s; a refused
sitting ends and the next attempt starts from nothing; a blink seen through a light or focus change does not
count; the challenge is announced once and "turn" refuses a blinking picture that is only turned as a plane;
the evidence fits the wire contract.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.roles.attendance import AttendanceConfig, AttendanceRole, _liveness
from drivers.camera import Camera, CameraConfig
from drivers.face import FaceChallenge, FaceConfig, FaceEngine, FaceGallery, FaceMatch, FaceReject, encode_image
from drivers.face.config import LivenessLimits
from drivers.face.engine import Outcome
from drivers.face.gallery import load_face_recognition
from drivers.face.liveness import Sitting, points68
from protocol.events import AttendancePunch, AttendanceRejected
from tests.support.faces import framed, photo, write_video
from tests.support.liveness_media import ATTACKS, VIDEO_FPS, Motion, attack, genuine, posed, sampled

# obama3 is matched through obama's and obama2's shots (a photo the gallery never saw); grace_hopper wears glasses,
# which make her landmarks the noisiest of the photos (EAR noise 0.03 sd against 0.01).
PEOPLE = {"obama3": "obama", "biden": "biden", "grace_hopper": "grace_hopper"}
SECONDS = 3.4  # past the 3 s window: the refusal must come, and nothing after it


@pytest.fixture(scope="module")
def enrolled() -> dict[str, np.ndarray]:
    shots = {name: encode_image(np.asarray(photo(name)))[0] for name in ("obama", "obama2", "biden", "grace_hopper")}
    return {
        "obama": np.stack([shots["obama"], shots["obama2"]]),
        "biden": shots["biden"][None],
        "grace_hopper": shots["grace_hopper"][None],
    }


@pytest.fixture(scope="module")
def gallery(enrolled: dict[str, np.ndarray]) -> FaceGallery:
    return FaceGallery(enrolled)


async def through_camera(engine: FaceEngine, video: Path, fps: float = 5) -> list[tuple[float, Outcome]]:
    """(seconds since the first frame, outcome) of every frame the camera delivers from ``video``."""
    out: list[tuple[float, Outcome]] = []
    started: float | None = None
    async for frame in Camera(CameraConfig(source=str(video), fps=fps)).frames():
        now = time.monotonic()
        started = now if started is None else started
        out.append((now - started, await asyncio.to_thread(engine.process, frame, now)))
    return out


def said(outcomes: list[tuple[float, Outcome]]) -> list[Outcome]:
    return [o for _, o in outcomes if o is not None]


@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("name", list(PEOPLE))
async def test_no_generated_attack_punches(
    gallery: FaceGallery, tmp_path: Path, name: str, kind: str, record_property: Callable[[str, object], None]
) -> None:
    """GIVEN a photo of an enrolled person shown to the camera as attack ``kind`` for 3.4 s THEN no punch. Each
    attack's face is matched and its sitting refused once by the liveness check (not_live, naming the person, with
    its numbers), then nothing more is said. One exception, pinned as exactly what it is: the dense-moiré screen,
    whose face the detector may lose every other frame (biden's), is never confirmed as anyone, so the engine
    reports nothing at all (no match, no refusal: an empty view to it); the reason is recorded in the test's
    properties (junit XML). ``screen_close`` is the replay whose face is found: the liveness check refuses it."""
    video = write_video(tmp_path / f"{kind}.avi", attack(name, kind, SECONDS, seed=1), fps=VIDEO_FPS)
    outcomes = said(await through_camera(FaceEngine(FaceConfig(), gallery), video))
    print(f"\n{name} {kind}: {outcomes}")
    assert not any(isinstance(o, FaceMatch) for o in outcomes), outcomes
    refused = [o for o in outcomes if isinstance(o, FaceReject) and o.reason == "not_live"]
    if not refused:
        assert kind == "screen" and outcomes == [], f"only the dense-moiré screen may go unmatched: {outcomes}"
        record_property("refusal", "never matched: the face was not found in two frames running, nothing reported")
        return
    record_property("refusal", refused[0].detail)
    assert len(refused) == 1 and outcomes == refused, outcomes
    evidence = refused[0].liveness
    assert refused[0].staff_id == PEOPLE[name] and evidence is not None and evidence.blink_s is None
    assert evidence.drop < FaceConfig().limits.blink_drop


# Each photo with a blink warped along its landmarks (eyes shut 0.3 s as when asked, 0.1 s as a natural blink). obama2
# is one of obama's enrolment shots here: a genuine sitting needs only its face matched, and it has no glasses.
GENUINE = [
    ("obama3", 0.3), ("obama2", 0.3), ("biden", 0.3), ("biden", 0.1), ("grace_hopper", 0.3), ("grace_hopper", 0.1)
]  # fmt: skip
STAFF = {**PEOPLE, "obama2": "obama"}
# Measured (this test, bench/face.py section 5; docs/threat-model.md): none is refused. Before the eyes were compared
# after the best 2-px shift and the drop against the open frames on both sides of it, three were: grace_hopper's two
# (behind her glasses the landmarks follow the warped lid by an EAR drop of 0.14 in one eye against a median of frames
# before it) and obama2's on other seeds (0.17-0.19), under a blink_drop of 0.22 that attacks' raw drops (0.16-0.21)
# kept high. They now drop by 0.13-0.24 while no attack shaped like a lid drops by more than 0.07.
FALSELY_REFUSED: set[str] = set()
MEASURED_FALSE_REFUSALS = 0


async def test_a_genuine_blink_punches_within_1_5_s_but_for_the_measured_false_refusals(
    gallery: FaceGallery, tmp_path: Path
) -> None:
    """GIVEN each sitting of GENUINE: someone stepping up and blinking 0.3 s later, played through the camera at
    5 fps, 640x480, for 3.4 s (past the window, so a refusal comes) THEN each gives exactly one outcome: a punch of
    that person with the blink in its evidence on a frame at most 1.5 s into the video, or a not_live refusal of
    that person. Refusals (false refusals: these people blinked) come only from the photos of FALSELY_REFUSED and
    are at most MEASURED_FALSE_REFUSALS; the wall time to a punch is printed, not asserted (on a loaded machine the
    engine falls behind the file; bench/face.py measures it alone)."""
    falsely_refused: list[tuple[str, float]] = []
    for i, (name, closed_s) in enumerate(GENUINE):
        frames = genuine(name, SECONDS, blinks=(0.3,), closed_s=closed_s, seed=2)
        video = write_video(tmp_path / f"sitting-{i}.avi", frames, fps=VIDEO_FPS)
        outcomes = await through_camera(FaceEngine(FaceConfig(), gallery), video)
        [(index, wall, outcome)] = [(k, t, o) for k, (t, o) in enumerate(outcomes) if o is not None]
        print(f"\n{name} shut {closed_s} s: frame {index} ({index / 5:.1f} s of video, {wall:.2f} s wall): {outcome}")
        if isinstance(outcome, FaceReject) and outcome.reason == "not_live":
            assert outcome.staff_id == STAFF[name], outcome
            falsely_refused.append((name, closed_s))
            continue
        assert isinstance(outcome, FaceMatch) and outcome.staff_id == STAFF[name], outcomes
        assert index / 5 <= 1.5
        assert outcome.liveness is not None and outcome.liveness.blink_s is not None
        assert outcome.liveness.drop >= FaceConfig().limits.blink_drop
    assert {name for name, _ in falsely_refused} <= FALSELY_REFUSED, falsely_refused
    assert len(falsely_refused) <= MEASURED_FALSE_REFUSALS, falsely_refused


def run(engine: FaceEngine, frames: list[np.ndarray], start: float = 0.0, fps: float = 5) -> list[Outcome]:
    return [engine.process(f, start + i / fps) for i, f in enumerate(frames)]


def test_a_refused_sitting_ends_and_the_next_attempt_starts_from_nothing(gallery: FaceGallery) -> None:
    """GIVEN a still photo refused after 3 s WHEN a blink follows while the face stays in view THEN no punch (the
    refused sitting has ended: before, such a sitting punched at the later blink); WHEN the face leaves the
    view and comes back blinking THEN a new sitting punches, its evidence counting only its own frames."""
    engine = FaceEngine(FaceConfig(), gallery)
    blink = [f for _, f in sampled(genuine("biden", 1.6, blinks=(0.3,), seed=3), 5)]
    still = [blink[0]] * 16
    refused = [o for o in run(engine, still + blink) if o is not None]
    assert len(refused) == 1 and isinstance(refused[0], FaceReject) and refused[0].reason == "not_live", refused
    empty = np.full_like(blink[0], 128)
    again = [o for o in run(engine, [empty, *blink], start=10.0) if o is not None]
    assert len(again) == 1 and isinstance(again[0], FaceMatch), again
    assert again[0].liveness is not None and again[0].liveness.frames <= len(blink)


def test_a_blink_seen_through_a_light_or_focus_change_does_not_count(gallery: FaceGallery) -> None:
    """GIVEN a genuine blink whose shut frame is also darker by 20 % (a light change) or blurred (a focus change)
    THEN no punch: the change over the face plane makes those frames unsteady, and the same blink without
    it punches. (A light or focus change is what a picture can bring to the lids; a blink brings nothing
    else.)"""
    sitting = [f for _, f in sampled(genuine("obama3", 2.0, blinks=(0.5,), closed_s=0.3, seed=4), 5)]
    shut = min(range(len(sitting)), key=lambda i: _ear_of(sitting[i]))
    darker, blurred = list(sitting), list(sitting)
    darker[shut] = (sitting[shut] * 0.8).astype(np.uint8)
    blurred[shut] = cv2.GaussianBlur(sitting[shut], (0, 0), 1.0)  # still sharp enough for the quality gate
    assert any(isinstance(o, FaceMatch) for o in run(FaceEngine(FaceConfig(), gallery), sitting))
    for changed in (darker, blurred):
        outcomes = [o for o in run(FaceEngine(FaceConfig(), gallery), changed + [sitting[0]] * 8) if o is not None]
        assert [type(o) for o in outcomes] == [FaceReject], outcomes
        assert isinstance(outcomes[0], FaceReject) and outcomes[0].reason == "not_live", outcomes
        assert outcomes[0].liveness is not None
        assert outcomes[0].liveness.unsteady >= 1


def _ear_of(frame: np.ndarray) -> float:
    rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    p = points68(load_face_recognition().face_landmarks(rgb, model="large")[0])
    eye = p[36:42]
    return float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / float(
        np.linalg.norm(eye[0] - eye[3])
    )


def test_the_challenge_is_announced_once_and_turn_needs_a_turn_no_picture_makes(gallery: FaceGallery) -> None:
    """GIVEN challenge "blink" THEN the screen is asked once, at the confirming frame, and a blink punches.
    GIVEN challenge "turn" and a picture that blinks (a warped photo, as a video replay would show) turned
    about its vertical axis by up to 30 degrees THEN no punch: turned as a plane, the nose stays where it was
    between the cheeks."""
    blink = [f for _, f in sampled(genuine("biden", 1.6, blinks=(0.3,), seed=5), 5)]
    outcomes = [o for o in run(FaceEngine(FaceConfig(challenge="blink"), gallery), blink) if o is not None]
    assert outcomes[0] == FaceChallenge("biden", "blink") and isinstance(outcomes[1], FaceMatch), outcomes
    turned = [posed(f, Motion(yaw=30 * np.sin(i / 3))) for i, f in enumerate(blink + [blink[0]] * 10)]
    outcomes = [o for o in run(FaceEngine(FaceConfig(challenge="turn"), gallery), turned) if o is not None]
    assert outcomes[0] == FaceChallenge("biden", "turn")
    assert isinstance(outcomes[-1], FaceReject) and "no head turn" in outcomes[-1].detail, outcomes
    assert not any(isinstance(o, FaceMatch) for o in outcomes)


def test_a_head_turn_moves_the_nose_between_the_cheeks() -> None:
    """GIVEN landmark tracks of a head turning (the nose tip and bridge moving sideways by up to 15 % of the face
    width against the jaw, as a head turned about 20 degrees does) THEN the sitting measures the turn; the same
    face shifted, scaled and sheared as a plane measures none. Landmarks only: no video here shows a real head
    turn, so this pins the geometry, not a camera."""
    base = _face_points()
    gray = np.full((480, 640), 120, np.uint8)
    turning = Sitting(LivenessLimits(), 0.0, challenge="turn")
    planar = Sitting(LivenessLimits(), 0.0, challenge="turn")
    width = base[16, 0] - base[0, 0]
    shear = np.array([[1.1, 0.15], [0.05, 0.95]])
    for i in range(6):
        turned = base.copy()
        turned[27:36, 0] += 0.03 * i * width
        turning.add(gray, turned, 100.0, i / 5)
        planar.add(gray, (base - base.mean(0)) @ (shear * (1 + 0.02 * i)).T + base.mean(0) + 5 * i, 100.0, i / 5)
    assert turning.evidence(1.2).turn >= LivenessLimits().turn_min
    assert planar.evidence(1.2).turn < 0.01


def _face_points() -> np.ndarray:
    rgb = np.ascontiguousarray(cv2.cvtColor(framed("biden"), cv2.COLOR_BGR2RGB))
    return points68(load_face_recognition().face_landmarks(rgb, model="large")[0])


def test_points68_is_dlibs_order() -> None:
    """face_recognition's named features repeat the lip corners and list the inner lips backwards; points68 gives
    back the 68 points in dlib's order (checked against dlib's own shape predictor output)."""
    fr = load_face_recognition()
    rgb = np.ascontiguousarray(cv2.cvtColor(framed("obama3"), cv2.COLOR_BGR2RGB))
    box = fr.face_locations(rgb, number_of_times_to_upsample=0)[0]
    shape = fr.api.pose_predictor_68_point(rgb, fr.api._css_to_rect(box))
    raw = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
    assert np.array_equal(points68(fr.face_landmarks(rgb, [box], model="large")[0]), raw)


def test_the_evidence_fits_the_wire_contract_even_when_degenerate(gallery: FaceGallery) -> None:
    """GIVEN a real punch's evidence, and one with absurd measures (a degenerate frame) THEN both become valid
    attendance.punch / punch_rejected payloads: the measures are clamped to the contract's bounds, never
    allowed to cost the punch."""
    blink = [f for _, f in sampled(genuine("biden", 1.6, blinks=(0.3,), seed=6), 5)]
    [match] = [o for o in run(FaceEngine(FaceConfig(), gallery), blink) if o is not None]
    assert isinstance(match, FaceMatch) and match.liveness is not None
    punch = AttendancePunch(staff_id="biden", method="face", liveness=_liveness(match.liveness))
    assert punch.liveness is not None and punch.liveness.drop == match.liveness.drop
    from dataclasses import replace

    absurd = replace(match.liveness, blur=1e9, drop=3.0, rigid=-1.0, sitting_s=1e7, challenge="blink")
    wire = _liveness(absurd)
    rejected = AttendanceRejected(method="face", reason="not_live", staff_id="biden", liveness=wire)
    assert rejected.liveness is not None
    assert (rejected.liveness.blur, rejected.liveness.drop, rejected.liveness.rigid) == (1000.0, 1.0, 0.0)


def test_a_sitting_keeps_the_challenge_it_began_with(gallery: FaceGallery) -> None:
    """GIVEN a sitting begun while the site asked for no challenge WHEN the centre's new settings (challenge "turn")
    reach the engine on the sitting's next frame THEN that sitting neither shows the turn on the screen nor needs it:
    it punches on its blink, its evidence saying no challenge was asked (before, the screen asked for a turn the
    sitting did not need, and the punch claimed one was asked). The next sitting is asked for the turn."""
    blink = [f for _, f in sampled(genuine("biden", 1.6, blinks=(0.3,), seed=5), 5)]
    engine = FaceEngine(FaceConfig(), gallery)
    first = engine.process(blink[0], 0.0)
    engine.set_config(FaceConfig(challenge="turn"))
    outcomes = [o for o in [first, *run(engine, blink[1:], start=0.2)] if o is not None]
    assert [type(o) for o in outcomes] == [FaceMatch], outcomes
    assert isinstance(outcomes[0], FaceMatch) and outcomes[0].liveness is not None
    assert outcomes[0].liveness.challenge == "none"
    empty = np.full_like(blink[0], 128)
    again = [o for o in run(engine, [empty, *blink[:3]], start=100.0) if o is not None]  # past the punch's cooldown
    assert again == [FaceChallenge("biden", "turn")], again


# -- the terminal's role: what goes on the wire ----------------------------------------------------------
@dataclass
class Desk:
    """The attendance role on a camera file, with what it sent (each payload encoded into an envelope as the outbox
    does, so the contract's bounds are checked) and what its screen showed."""

    role: AttendanceRole
    sent: list[tuple[str, Any]]


def desk(tmp_path: Path, video: Path, enrolled: dict[str, np.ndarray], face: FaceConfig | None = None) -> Desk:
    from agent.device import DeviceContext
    from agent.gallery import GalleryConfig, Held
    from protocol.envelope import Envelope
    from protocol.events import encode_event
    from protocol.ids import uuid7
    from runtime.clock import SystemClock

    sent: list[tuple[str, Any]] = []

    async def emit(event_type: str, payload: Any, counter: str | None = None) -> Envelope:
        env = Envelope(v=1, site="qp", device="att-1", id=uuid7(), type=event_type, seq=len(sent) + 1, boot_id="b",
                       ts=SystemClock().now(), clock_synced=True, data=payload.model_dump(mode="json"))  # fmt: skip
        encode_event(env)
        sent.append((event_type, payload))
        return env

    device = DeviceContext("qp", "att-1", "b", SystemClock(), None, emit, None, lambda: True, lambda: True)  # type: ignore[arg-type]
    (tmp_path / "key").write_text(base64.b64encode(os.urandom(32)).decode())  # the sealed gallery's key
    cfg = AttendanceConfig(
        camera=CameraConfig(source=str(video), fps=5),
        gallery=GalleryConfig(path=tmp_path / "gallery.sealed", key_file=tmp_path / "key"),
        face=face or FaceConfig(),
        reject_repeat_s=0,
    )
    role = AttendanceRole(device, cfg)
    role.held = Held(1, {sid: enrolled[sid] for sid in ("obama", "biden")})
    return Desk(role, sent)


async def test_the_terminal_sends_the_evidence_with_the_punch_and_the_refusal(
    enrolled: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """GIVEN the attendance role on a camera file: a still photo of biden for 3.4 s, then a genuine sitting of
    obama3 WHEN the face loop runs THEN the refusal is an attendance.punch_rejected naming biden (the centre
    pairs it with a later fingerprint punch) and the punch an attendance.punch, both carrying PunchLiveness and
    both valid on the wire (encoded into an envelope as the outbox does)."""
    still = attack("biden", "still", SECONDS, seed=3)
    video = write_video(tmp_path / "desk.avi", still + genuine("obama3", 2.0, blinks=(0.4,), seed=3), fps=VIDEO_FPS)
    d = desk(tmp_path, video, enrolled)
    assert d.role.cfg.camera is not None
    await d.role._face_loop(d.role.cfg.camera)
    kinds = [(t, getattr(p, "reason", None), p.staff_id) for t, p in d.sent]
    assert kinds == [("attendance.punch_rejected", "not_live", "biden"), ("attendance.punch", None, "obama")], d.sent
    refusal, punch = d.sent[0][1], d.sent[1][1]
    assert refusal.liveness is not None and refusal.liveness.blink_s is None
    assert punch.liveness is not None and punch.liveness.drop >= FaceConfig().limits.blink_drop


async def test_the_screen_asks_for_the_sites_challenge_as_an_instruction(
    enrolled: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """GIVEN a site asking for a blink WHEN obama3 steps up and blinks THEN the terminal's screen first asks 请眨眼
    (Please blink) of the person it recognised, as an instruction (prompt: neither a punch nor a refusal, which the
    demo and a person would read as an answer; before, it was shown as a refusal with no English line), then
    says 打卡成功; the punch's evidence names the challenge asked."""
    video = write_video(tmp_path / "asked.avi", genuine("obama3", 2.0, blinks=(0.6,), seed=3), fps=VIDEO_FPS)
    d = desk(tmp_path, video, enrolled, FaceConfig(challenge="blink"))
    assert d.role.cfg.camera is not None
    await d.role._face_loop(d.role.cfg.camera)
    shown = [(f.ok, f.prompt, f.text, f.text_en, f.staff_id) for f in d.role.output.shown]
    assert shown[0] == (True, True, "请眨眼", "Please blink", "obama"), shown
    assert len(shown) == 2 and shown[1][:2] == (True, False) and shown[1][2].startswith("打卡成功"), shown
    [(kind, punch)] = d.sent
    assert kind == "attendance.punch" and punch.liveness is not None and punch.liveness.challenge == "blink"
