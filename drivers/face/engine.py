"""The attendance terminal's face engine: camera frame in, punch (FaceMatch) or reason (FaceReject) out.

Gated, because a punch is an attendance record (requirements §1.7: nobody clocks in for someone
else) and face_recognition's default tolerance of 0.6 is loose (peers.md lesson 10):

1. quality: exactly one face big enough (smaller faces, e.g. people passing behind, are ignored
   while one face is big enough), not too small, sharp enough;
2. identity: nearest enrolled staff member within ``threshold``, the same one in ``confirm_frames``
   consecutive analysed frames (any frame without that match starts the count again);
3. liveness ("motion"): the eyes must change between frames of the streak in a way a flat picture
   cannot (below);
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

Liveness "motion", and what it is worth. A live face changes between frames in ways a flat picture
cannot: eyes blink and look around, a head turning in 3D shifts features against each other. A
photo, moved, turned and tilted in front of the camera, only ever moves as a plane: one homography
maps one frame onto another. So each frame of a streak is aligned onto the streak's first frame
(coarse: a similarity from the 68 face landmarks; fine: OpenCV's ECC homography fitted on the face
without the eyes) and what is left in the eye regions is measured (mean absolute difference of the
contrast-normalised pixels). We measured (6 faces, Gaussian camera noise + JPEG, hand-held shake up
to 8 degrees and 10 % scale, tilt up to 25 degrees): a rigid picture leaves at most 0.11; eyes
painted shut leave 0.46 or more, eyelids 60 % closed 0.45, 40 % closed 0.25. ``liveness_threshold``
0.2 sits between. Frames whose alignment fails (ECC correlation under 0.95) count for nothing
either way; on the photo with glasses (grace_hopper) that was about 1 frame in 10, and every frame
of the synthetic 60 % eyelid squash, which bends the glasses too (a real blink does not).
Landmarks alone were not enough: the eye aspect ratio of dlib's 68-point model moved by up to 0.30
from noise alone on a still photo and by as little as 0.06 when the eyes were painted shut.

It stops: a printed photo or a phone or tablet showing a still picture, held still, moved, turned or
tilted. It does NOT stop: a video of the person replayed on a phone or tablet, a photo with the eyes
cut out and someone's eyes behind it, a mask, a bent photo that folds across the eyes. A live person
who does not blink within ``liveness_frames`` gets one ``not_live`` (the screen should ask them to
blink) and is punched at their next blink while they stay in front of the camera.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drivers.face.config import SHARPNESS_SIDE, FaceConfig, FaceMatch, FaceReject
from drivers.face.gallery import FaceGallery, load_face_recognition

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's order


@dataclass(frozen=True)
class _Face:
    """The one face of a frame that passed the quality gates."""

    box: Box
    gray: np.ndarray


@dataclass(frozen=True)
class _EyeReference:
    """The first frame of a streak, cut down to what later frames are compared with."""

    gray: np.ndarray  # float32, blurred: the face box with a margin
    origin: tuple[int, int]  # (x, y) of that crop in the frame
    points: np.ndarray  # (n, 2) float32 landmarks, frame coordinates
    eyes: np.ndarray  # bool mask of both eyes (dilated), crop coordinates
    rest: np.ndarray  # uint8 mask of everything else: what the plane is fitted on


@dataclass
class _Streak:
    """Consecutive analysed frames with the same outcome of the 1:N match (a staff id, or None)."""

    staff_id: str | None
    frames: int = 0
    worst: float = 0.0  # largest distance seen: a match reports its worst frame
    nearest: float = math.inf  # smallest: an unknown says how close it came
    settled: bool = False  # punched or in cooldown: this streak reports nothing more
    reported_at: float | None = None  # when "unknown" / "not_live" was last reported for it
    reference: _EyeReference | None = None
    eye_change: float = 0.0  # largest seen against the reference


class FaceEngine:
    """Frames in, punches out. ``process`` blocks for tens of milliseconds (call it via asyncio.to_thread)
    and is serialised by a lock; ``set_gallery`` may be called from any thread at any time."""

    def __init__(self, cfg: FaceConfig, gallery: FaceGallery) -> None:
        self._fr = load_face_recognition()  # fails the start loudly (FaceEngineUnavailable)
        self._cfg = cfg
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

    def process(self, frame_bgr: np.ndarray, now: float) -> FaceMatch | FaceReject | None:
        """Analyse one BGR frame taken at monotonic time ``now``. None: nothing to report yet (an empty
        view, the normal state of a terminal, or a streak still confirming)."""
        with self._lock:
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
        return _Face(big[0], gray)

    def _detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """HOG on the downscaled frame (no upsampling: 4x cheaper), boxes back in full-frame pixels."""
        scale = self._cfg.detect_scale
        small = frame_bgr
        if scale != 1.0:
            small = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._fr.face_locations(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), number_of_times_to_upsample=0)
        height, width = frame_bgr.shape[:2]
        return [_scale_box(box, 1.0 / scale, width, height) for box in found]

    def _judge(
        self, frame_bgr: np.ndarray, face: _Face, gallery: FaceGallery, now: float
    ) -> FaceMatch | FaceReject | None:
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        encoding = self._fr.face_encodings(rgb, [face.box])[0]
        staff_id, distance = gallery.match(encoding)
        streak = self._extend(staff_id if distance <= self._cfg.threshold else None, distance)
        if streak.staff_id is not None and self._cfg.liveness == "motion" and not streak.settled:
            self._watch_eyes(streak, face, rgb)
        return self._decide(streak, now)

    def _extend(self, staff_id: str | None, distance: float) -> _Streak:
        streak = self._streak
        if streak is None or streak.staff_id != staff_id:
            streak = self._streak = _Streak(staff_id)
        streak.frames += 1
        streak.worst = max(streak.worst, distance)
        streak.nearest = min(streak.nearest, distance)
        return streak

    def _watch_eyes(self, streak: _Streak, face: _Face, rgb: np.ndarray) -> None:
        """Set the streak's reference on its first frame; later frames raise ``eye_change``."""
        if streak.eye_change >= self._cfg.liveness_threshold:
            return  # already live
        marks = self._fr.face_landmarks(rgb, [face.box], model="large")
        if not marks:
            return
        gray = cv2.GaussianBlur(face.gray.astype(np.float32), (0, 0), 1.0)
        points = np.array([p for feature in marks[0].values() for p in feature], dtype=np.float32)
        if streak.reference is None:
            streak.reference = _eye_reference(gray, face.box, marks[0], points)
        else:
            streak.eye_change = max(streak.eye_change, _eye_change(streak.reference, gray, points))

    def _decide(self, streak: _Streak, now: float) -> FaceMatch | FaceReject | None:
        cfg = self._cfg
        if streak.frames < cfg.confirm_frames or streak.settled:
            return None
        if streak.staff_id is None:
            return self._unknown(streak, now)
        since = now - self._punched.get(streak.staff_id, -math.inf)
        if since < cfg.cooldown_s:
            streak.settled = True
            return FaceReject("cooldown", f"punched {since:.0f} s ago, again after {cfg.cooldown_s:.0f} s")
        if cfg.liveness == "motion" and streak.eye_change < cfg.liveness_threshold:
            if streak.frames < cfg.liveness_frames or streak.reported_at is not None:
                return None  # keep watching: a blink later in this streak still punches
            streak.reported_at = now
            detail = f"no eye movement in {streak.frames} frames ({streak.eye_change:.2f} < {cfg.liveness_threshold})"
            return FaceReject("not_live", detail + ": please blink")
        streak.settled = True
        self._punch(streak.staff_id, now)
        return FaceMatch(streak.staff_id, streak.worst, streak.frames)

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


_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
ALIGNED_MIN = 0.95  # ECC correlation of a usable alignment


def _eye_reference(gray: np.ndarray, box: Box, marks: dict[str, Any], points: np.ndarray) -> _EyeReference:
    top, right, bottom, left = box
    margin = 0.15 * (bottom - top)
    x0, y0 = max(int(left - margin), 0), max(int(top - margin), 0)
    x1, y1 = min(int(right + margin), gray.shape[1]), min(int(bottom + margin), gray.shape[0])
    crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
    mask = np.zeros(crop.shape, np.uint8)
    widths = []
    for name in ("left_eye", "right_eye"):
        eye = np.array(marks[name], np.int32) - np.array([x0, y0], np.int32)
        cv2.fillPoly(mask, [eye], 1)
        widths.append(float(np.linalg.norm(eye[0] - eye[3])))
    side = int(0.6 * max(widths)) | 1  # the lids and some skin around them: a blink moves both
    eyes = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))) > 0
    return _EyeReference(crop, (x0, y0), points, eyes, (~eyes).astype(np.uint8))


def _eye_change(ref: _EyeReference, gray: np.ndarray, points: np.ndarray) -> float:
    """What is left in the eye regions once this frame is aligned onto the reference as a plane.

    The plane is fitted on the face around the eyes (the eyes are masked out of the ECC fit, so a
    blink does not bend the fit); an alignment that does not converge or correlates below
    ALIGNED_MIN (measured: 0.96-0.999 when it works, 0.4-0.9 when it wandered off) is no evidence
    either way: a bad fit would otherwise leave a residual that looks like a blink.
    """
    similarity, _ = cv2.estimateAffinePartial2D(points, ref.points, method=cv2.LMEDS)
    if similarity is None:
        return 0.0
    similarity[:, 2] -= ref.origin
    height, width = ref.gray.shape
    moved = cv2.warpAffine(gray, similarity, (width, height), borderMode=cv2.BORDER_REPLICATE)
    start = np.eye(3, dtype=np.float32)
    try:  # gaussFiltSize 1: both images are blurred already
        rho, warp = cv2.findTransformECC(ref.gray, moved, start, cv2.MOTION_HOMOGRAPHY, _ECC_CRITERIA, ref.rest, 1)
    except cv2.error:
        return 0.0
    if rho < ALIGNED_MIN:
        return 0.0
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpPerspective(moved, warp, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return float(np.abs(_zscore(ref.gray[ref.eyes]) - _zscore(aligned[ref.eyes])).mean())


def _zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() + 1e-6)
