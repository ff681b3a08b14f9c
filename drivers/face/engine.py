"""The attendance terminal's face engine: camera frame in, punch (FaceMatch) or reason (FaceReject) out.

Gated, because a punch is an attendance record (requirements §1.7: nobody clocks in for someone
else) and face_recognition's default tolerance of 0.6 is loose (peers.md lesson 10):

1. quality: exactly one face big enough (smaller faces, e.g. people passing behind, are ignored
   while one face is big enough), not too small, sharp enough;
2. identity: nearest enrolled staff member within ``threshold``, the same one in ``confirm_frames``
   consecutive analysed frames (any frame without that match starts the count again);
3. liveness ("blink", drivers/face/liveness.py): within ``limits.window_s`` of the sitting's first frame,
   both eyes close and open on a face that otherwise stays rigid under steady light and focus; with a
   challenge, the screen asks for it (FaceChallenge) and "turn" needs a head turn too. A sitting that
   does not show it is refused once (not_live, with its numbers) and ends: nothing it saw carries over,
   and a new attempt begins when the face has left the view (or another face came);
4. cooldown: one punch per person per ``cooldown_s``, and one outcome per streak: someone who stays
   in front of the camera punches once, and must step away before they can punch again.

Threshold, measured on the real photos that registry packages ship (tests/test_face.py prints the
table; dlib-bin 20.0, face_recognition 1.3.0, enrolled: obama = obama.jpg + obama2.jpg, biden =
biden.jpg). Same person: obama3 -> obama 0.33 (0.43 to obama2 alone), the enrolment shots to each
other 0.35. Different people: obama3 -> biden 0.87, grace_hopper -> obama 0.82, astronaut -> biden
0.83, biden <-> obama2 0.82, grace_hopper <-> astronaut 0.70, the closest strangers we have.
Through the engine on 640x480 frames the obama3 distance stays 0.33-0.35 (blink and camera noise
included). 0.5 sits 0.07 above the worst same-person pair and 0.20 below the closest strangers;
0.6, the library default, leaves 0.10 to a stranger and gains nothing on these photos. The margin
is thin on one side: enrol two or more shots per person (the min over shots is what is matched)
and re-measure on the hall's own gallery.

Liveness: what it stops and what it does not is in drivers/face/liveness.py and docs/threat-model.md.
Every outcome of a sitting carries LivenessEvidence (numbers, never pixels) for the centre to audit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drivers.face.config import SHARPNESS_SIDE, FaceChallenge, FaceConfig, FaceMatch, FaceReject
from drivers.face.gallery import FaceGallery, load_face_recognition
from drivers.face.liveness import Sitting, points68

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's order


@dataclass(frozen=True)
class _Face:
    """The one face of a frame that passed the quality gates."""

    box: Box
    gray: np.ndarray
    sharpness: float


@dataclass
class _Streak:
    """Consecutive analysed frames with the same outcome of the 1:N match (a staff id, or None): for an enrolled
    face, one sitting."""

    staff_id: str | None
    frames: int = 0
    worst: float = 0.0  # largest distance seen: a match reports its worst frame
    nearest: float = math.inf  # smallest: an unknown says how close it came
    settled: bool = False  # punched, refused or in cooldown: this streak reports nothing more
    reported_at: float | None = None  # when "unknown" was last reported for it
    challenged: bool = False  # the screen was asked to show the challenge
    sitting: Sitting | None = None


Outcome = FaceMatch | FaceReject | FaceChallenge | None


class FaceEngine:
    """Frames in, punches out. ``process`` blocks for tens of milliseconds (call it via asyncio.to_thread)
    and is serialised by a lock; ``set_gallery`` may be called from any thread at any time."""

    def __init__(self, cfg: FaceConfig, gallery: FaceGallery) -> None:
        self._fr = load_face_recognition()  # fails the start loudly (FaceEngineUnavailable)
        self._cfg = cfg
        self._next_cfg = cfg
        self._gallery = gallery
        self._lock = threading.Lock()
        self._streak: _Streak | None = None
        self._streak_gallery: FaceGallery | None = None
        self._punched: dict[str, float] = {}  # staff_id -> monotonic time of their last punch

    @property
    def gallery(self) -> FaceGallery:
        return self._gallery

    def set_gallery(self, gallery: FaceGallery) -> None:
        """Use ``gallery`` from the next frame on. One reference assignment, so atomic; process() sees
        the new object and starts a new streak (a match made on the old gallery must not carry over)."""
        self._gallery = gallery

    @property
    def cfg(self) -> FaceConfig:
        return self._next_cfg

    def set_config(self, cfg: FaceConfig) -> None:
        """Use ``cfg`` (the site's thresholds, from the centre) from the next frame on; a sitting in progress keeps
        the liveness limits it started with. One reference assignment, so callable from any thread without
        waiting for a frame in progress."""
        self._next_cfg = cfg

    def process(self, frame_bgr: np.ndarray, now: float) -> Outcome:
        """Analyse one BGR frame taken at monotonic time ``now``. None: nothing to report yet (an empty
        view, the normal state of a terminal, or a sitting still confirming or watching for a blink)."""
        with self._lock:
            self._cfg = self._next_cfg  # one config for the whole frame
            gallery = self._gallery
            if gallery is not self._streak_gallery:
                self._streak, self._streak_gallery = None, gallery
            face = self._find_face(frame_bgr)
            if not isinstance(face, _Face):
                self._streak = None  # quality rejects and empty frames break the streak
                return face
            return self._judge(frame_bgr, face, gallery, now)

    def _find_face(self, frame_bgr: np.ndarray) -> _Face | FaceReject | None:
        cfg = self._cfg
        boxes = self._detect(frame_bgr)
        if not boxes:
            return None
        big = [b for b in boxes if b[2] - b[0] >= cfg.min_face_px]
        if len(big) > 1:
            return FaceReject("multiple_faces", f"{len(big)} faces in view: one person at a time")
        if not big:
            height = max(b[2] - b[0] for b in boxes)
            return FaceReject("too_small", f"face {height} px high, {cfg.min_face_px} needed: step closer")
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        sharpness = sharpness_of(gray, big[0])
        if sharpness < cfg.min_sharpness:
            return FaceReject("blurry", f"sharpness {sharpness:.0f} < {cfg.min_sharpness:.0f}: hold still")
        return _Face(big[0], gray, sharpness)

    def _detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """HOG on the downscaled frame (no upsampling: 4x cheaper), boxes back in full-frame pixels."""
        scale = self._cfg.detect_scale
        small = frame_bgr
        if scale != 1.0:
            small = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._fr.face_locations(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), number_of_times_to_upsample=0)
        height, width = frame_bgr.shape[:2]
        return [_scale_box(box, 1.0 / scale, width, height) for box in found]

    def _judge(self, frame_bgr: np.ndarray, face: _Face, gallery: FaceGallery, now: float) -> Outcome:
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        encoding = self._fr.face_encodings(rgb, [face.box])[0]
        staff_id, distance = gallery.match(encoding)
        streak = self._extend(staff_id if distance <= self._cfg.threshold else None, distance, now)
        if streak.sitting is not None and not streak.settled:
            self._watch(streak.sitting, face, rgb, now)
        return self._decide(streak, now)

    def _extend(self, staff_id: str | None, distance: float, now: float) -> _Streak:
        streak = self._streak
        if streak is None or streak.staff_id != staff_id:
            streak = self._streak = _Streak(staff_id)
            if staff_id is not None and self._cfg.liveness == "blink":  # a new sitting: nothing carried over
                streak.sitting = Sitting(self._cfg.limits, now, challenge=self._cfg.challenge)
        streak.frames += 1
        streak.worst = max(streak.worst, distance)
        streak.nearest = min(streak.nearest, distance)
        return streak

    def _watch(self, sitting: Sitting, face: _Face, rgb: np.ndarray, now: float) -> None:
        """The 68 landmarks of this frame into the sitting (a frame without them adds nothing)."""
        if sitting.live:
            return
        marks = self._fr.face_landmarks(rgb, [face.box], model="large")
        if not marks:
            return
        sitting.add(face.gray, points68(marks[0]), face.sharpness, now)

    def _decide(self, streak: _Streak, now: float) -> Outcome:
        cfg = self._cfg
        if streak.frames < cfg.confirm_frames or streak.settled:
            return None
        if streak.staff_id is None:
            return self._unknown(streak, now)
        since = now - self._punched.get(streak.staff_id, -math.inf)
        if since < cfg.cooldown_s:
            streak.settled = True
            detail = f"punched {since:.0f} s ago, again after {cfg.cooldown_s:.0f} s"
            return FaceReject("cooldown", detail, staff_id=streak.staff_id)
        sitting = streak.sitting
        if sitting is not None and not sitting.live:
            return self._not_yet(streak, sitting, now)
        streak.settled = True
        self._punch(streak.staff_id, now)
        evidence = sitting.evidence(now) if sitting is not None else None
        return FaceMatch(streak.staff_id, streak.worst, streak.frames, evidence)

    def _not_yet(self, streak: _Streak, sitting: Sitting, now: float) -> FaceChallenge | FaceReject | None:
        """Still watching (once, the challenge for the screen), or the window is over: refused, and the sitting
        ends."""
        if now - sitting.started < sitting.limits.window_s:
            # The sitting's own challenge: a site's new one from the centre waits for the next sitting, as its limits
            # do, so the screen never asks for a gesture the sitting does not need.
            if sitting.challenge != "none" and not streak.challenged and streak.staff_id is not None:
                streak.challenged = True
                return FaceChallenge(streak.staff_id, sitting.challenge)
            return None
        streak.settled = True
        e = sitting.evidence(now)
        lim = sitting.limits
        seen = "no blink" if sitting.blink is None else f"no head turn ({e.turn:.2f} < {lim.turn_min})"
        detail = (
            f"{seen} in {e.sitting_s:.1f} s: deepest eye drop {e.drop:.2f} (< {lim.blink_drop}), "
            f"{e.unsteady}/{e.frames} frames unsteady; step away and try again"
        )
        return FaceReject("not_live", detail, e, streak.staff_id)

    def _unknown(self, streak: _Streak, now: float) -> FaceReject | None:
        """Once per streak and then once per cooldown_s while the same stranger stays in view."""
        if streak.reported_at is not None and now - streak.reported_at < self._cfg.cooldown_s:
            return None
        streak.reported_at = now
        if math.isinf(streak.nearest):
            return FaceReject("unknown", "no one is enrolled on this terminal")
        return FaceReject("unknown", f"nearest enrolled face {streak.nearest:.2f} > {self._cfg.threshold:.2f}")

    def _punch(self, staff_id: str, now: float) -> None:
        horizon = now - self._cfg.cooldown_s  # older punches no longer block anyone: keep the dict small
        self._punched = {k: t for k, t in self._punched.items() if t > horizon}
        self._punched[staff_id] = now


def _scale_box(box: Any, factor: float, width: int, height: int) -> Box:
    top, right, bottom, left = box
    return (
        max(0, round(top * factor)),
        min(width, round(right * factor)),
        min(height, round(bottom * factor)),
        max(0, round(left * factor)),
    )


def sharpness_of(gray: np.ndarray, box: Box) -> float:
    top, right, bottom, left = box
    crop = cv2.resize(gray[top:bottom, left:right], (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())
