"""Blink liveness: a sitting is live only when both eyes close and open again, within ``blink_max_s``, on a face
that otherwise moved as one rigid piece under steady light and focus.

Why these signals. A picture of a face (printed, on a phone, on a screen) moves only as a plane, and its eyes
never close. The eye aspect ratio (EAR: lid-to-lid height over corner-to-corner width, from the 68 landmarks
the engine already computes) can still be fooled in these ways, each closed here:

- Foreshortening: a photo tilted back shrinks the eye's height, and a bare EAR falls as in a blink. Each
  frame's landmarks are first mapped onto the sitting's first frame by the homography fitted on the rigid
  landmarks (nose, eye corners, jaw), which undoes any tilt of a flat picture, perspective included, so the
  EAR is read on the face's own plane, not the camera's.
- Landmark drift under changing pixels: a reflection sweeping over a glossy print, moiré shifting on a
  screen, or autofocus hunting move the landmarks although nothing moved. A frame counts only if, against the
  frame before it, the face outside the eyes and mouth kept its brightness (``light_max``), its texture once
  aligned (``texture_max``: contrast-normalised pixels, so a plain exposure change is not texture), its
  sharpness (``blur_max``) and its landmark geometry (``rigid_max``); a frame that fails starts the search
  for a blink again from that frame. A blink changes the eyes and nothing else, so it passes.
- Misalignment of the eyes. Aligning on landmarks is only as good as the landmarks: on a picture turned or
  moved, the eye regions of two frames can sit a pixel or two apart, and the eye, the most contrasted part of
  a face, then "changes" as much as under a closing lid (0.24-0.37 of the face's brightness, against 0.14-0.31
  for a warped blink), and its landmarks can dip like a blink (an EAR drop of up to 0.25). So each eye's change
  is read after the best shift of up to 2 px (``REGISTER``, in half pixels) of one frame against the other: a
  shift explains a misaligned picture, never a lid over the iris (0.08-0.18 left for every warped blink).
- Noise and shape: a blink is three frames, open, shut, open again, within ``blink_max_s``. At the shut frame
  both eyes' EAR is down by ``blink_drop`` against the two open frames around it (their mean, per eye: the
  open eye's own level in that very sitting, not a fixed value and not a median of frames before it, which the
  landmarks' drift over a sitting made 0.03-0.06 too high or too low), and both eyes' pixels changed by
  ``eyes_min`` when the lid closed and again when it opened, ``eyes_ratio`` times what they changed between
  the two open frames (the lid leaves the eye as it found it); the second open frame is back to
  ``blink_recover`` of the first.

Measured here (6 real photos, 40 genuine sittings of bench/face.py's and the test's blinks, 105 attack
sittings of tests/support/liveness_media.py: seeds 0-2, 640x480, 5 fps, through MJPG): every genuine sitting
shows such a blink, no attack does, and none does either with any one of ``blink_drop``, ``eyes_min`` or
``blink_recover`` set to zero or ``eyes_ratio`` lowered to 2.0: the defaults sit inside that plateau (their
fields give the margins). Where this stops: see docs/threat-model.md (a video of the person, a mask, eye holes).

A head turn (challenge "turn"): parallax. The face's outline (jaw, eye corners) is mapped from the first frame
by a homography, which describes any motion of a flat picture exactly, tilt and perspective included; the
nose of a picture lands where that map puts it, the nose of a head turning in 3-D does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from drivers.face.config import Challenge, LivenessEvidence, LivenessLimits

RIGID = np.array([*range(0, 17), *range(27, 36), 36, 39, 42, 45])  # jaw, nose, eye corners
OUTLINE = np.array([*range(0, 17), 36, 39, 42, 45])  # jaw and eye corners: about one plane on a face
NOSE = np.arange(27, 36)  # stands out of that plane: parallax when the head turns
EYES = (np.arange(36, 42), np.arange(42, 48))  # dlib order: corner, upper lid x2, corner, lower lid x2
PATCH = 96  # side of the face patch the photometric checks compare (pixels, reference frame)
# Texture is compared on the patch shrunk to this side: sensor noise averages out (on a low-contrast face it
# otherwise read as 0.3-0.5 between two frames of a still photo), while a reflection, moiré drifting or a
# shadow, which cover much of the face, stay.
TEXTURE_SIDE = 24
# Eyes are compared on the patch enlarged by UPSCALE, under every shift of up to REGISTER patch pixels in steps of
# 1 / UPSCALE; the smallest difference is the eye's change (see the module docstring: misalignment).
UPSCALE = 2
REGISTER = 2


@dataclass(frozen=True)
class _Change:
    """How much a frame differs from the one before it, outside the eyes."""

    rigid: float = 0.0
    light: float = 0.0
    texture: float = 0.0
    blur: float = 0.0

    def within(self, lim: LivenessLimits) -> bool:
        return (
            self.rigid <= lim.rigid_max
            and self.light <= lim.light_max
            and self.texture <= lim.texture_max
            and self.blur <= lim.blur_max
        )

    def most(self, other: _Change) -> _Change:
        return _Change(*(max(a, b) for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[float, float, float, float]:
        return self.rigid, self.light, self.texture, self.blur


@dataclass(frozen=True)
class _Frame:
    at: float
    ear: tuple[float, float]  # left, right, after alignment to the reference
    eyes: tuple[np.ndarray, np.ndarray]  # each eye's box (enlarged, with REGISTER margin), shares of face brightness
    change: _Change
    brightness: float
    sharpness: float


@dataclass(frozen=True)
class _Look:
    """What is kept of the previous frame to compare the next one with."""

    points: np.ndarray
    eyes: tuple[np.ndarray, np.ndarray]
    brightness: float
    shading: np.ndarray  # the face plane's pixels less their mean, as shares of it (an exposure offset is not texture)
    sharpness: float


@dataclass
class Sitting:
    """One attempt: the frames of one enrolled face in view, from its first to its outcome. Never reused: a refused
    sitting ends, and the next attempt is a new Sitting with nothing carried over."""

    limits: LivenessLimits
    started: float
    challenge: Challenge = "none"  # the site's when the sitting began: what the screen asks, what "live" needs
    frames: int = 0
    unsteady: int = 0
    blink: LivenessEvidence | None = None
    _reference: np.ndarray | None = None  # (68, 2) landmarks of the first frame
    _to_patch: np.ndarray | None = None  # 3x3: reference coordinates -> patch
    _plane: np.ndarray | None = None  # bool TEXTURE_SIDE square: face without eyes and mouth
    _eyes: tuple[_EyeBox, _EyeBox] | None = None  # where each eye lies in the patch
    _turn: float = 0.0
    _last: _Look | None = None
    _run: list[_Frame] = field(default_factory=list)  # consecutive steady frames, newest last
    _deepest: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (drop, ear_open, eye change) of the deepest drop
    _changes: dict[tuple[float, float], tuple[float, float]] = field(default_factory=dict)  # _eye_change by (at, at)
    _worst: _Change = field(default_factory=_Change)

    @property
    def need_turn(self) -> bool:
        return self.challenge == "turn"

    @property
    def live(self) -> bool:
        return self.blink is not None and (not self.need_turn or self._turn >= self.limits.turn_min)

    def add(self, gray: np.ndarray, points: np.ndarray, sharpness: float, now: float) -> None:
        """One frame of the sitting: ``gray`` the whole frame, ``points`` its 68 landmarks (frame pixels)."""
        points = np.asarray(points, np.float64)
        if self._reference is None:
            self._start(points)
        self.frames += 1
        to_ref = _homography(points[RIGID], self._reference[RIGID])  # type: ignore[index]
        look = self._look(gray, points, to_ref, sharpness)
        change = self._compare(look)
        self._last = look
        aligned = _apply(to_ref, points)
        ears = (_ear(aligned[EYES[0]]), _ear(aligned[EYES[1]]))
        frame = _Frame(now, ears, look.eyes, change, look.brightness, sharpness)
        if change.light <= self.limits.light_max and change.blur <= self.limits.blur_max:
            self._turn = max(self._turn, _parallax(self._reference, points))  # type: ignore[arg-type]
        self._worst = self._worst.most(change)
        if change.within(self.limits):
            self._run.append(frame)
        else:
            self.unsteady += 1
            self._run = [frame]
        if self.blink is None:
            self._look_for_blink(now)

    def evidence(self, now: float) -> LivenessEvidence:
        if self.blink is not None:
            return replace(
                self.blink, turn=round(self._turn, 4), frames=self.frames, unsteady=self.unsteady,
                sitting_s=round(now - self.started, 3), challenge=self.challenge,
            )  # fmt: skip
        drop, ear_open, eyes = self._deepest
        w = self._worst
        return LivenessEvidence(
            ear_open=round(ear_open, 4), drop=round(drop, 4), eyes=round(eyes, 4), blink_s=None,
            rigid=round(w.rigid, 4), light=round(w.light, 4), texture=round(w.texture, 4), blur=round(w.blur, 4),
            turn=round(self._turn, 4),
            frames=self.frames, unsteady=self.unsteady, sitting_s=round(now - self.started, 3),
            challenge=self.challenge,
        )  # fmt: skip

    # -- per frame ----------------------------------------------------------------------------------------
    def _start(self, points: np.ndarray) -> None:
        self._reference = points
        left, top = points.min(axis=0)
        right, bottom = points.max(axis=0)
        side = max(right - left, bottom - top) * 1.1
        scale = PATCH / side
        cx, cy = (left + right) / 2, (top + bottom) / 2
        self._to_patch = np.array([[scale, 0, PATCH / 2 - scale * cx], [0, scale, PATCH / 2 - scale * cy], [0, 0, 1]])
        full = _plane_mask(_apply(self._to_patch, points)).astype(np.float32)
        self._plane = cv2.resize(full, (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_AREA) > 0.99
        self._eyes = _eye_boxes(_apply(self._to_patch, points))

    def _look(self, gray: np.ndarray, points: np.ndarray, to_ref: np.ndarray, sharpness: float) -> _Look:
        assert self._to_patch is not None and self._plane is not None and self._eyes is not None
        warp = self._to_patch @ to_ref
        patch = cv2.warpPerspective(gray, warp, (PATCH, PATCH), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        small = cv2.resize(patch.astype(np.float32), (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_AREA)
        values = small[self._plane]
        mean = float(values.mean())
        scale = max(mean, 1.0)
        eyes = (self._eyes[0].crop(patch, scale), self._eyes[1].crop(patch, scale))
        return _Look(points, eyes, mean, (values - mean) / scale, sharpness)

    def _compare(self, look: _Look) -> _Change:
        last = self._last
        if last is None:
            return _Change()
        span = _interocular(last.points)
        moved = _apply(_homography(look.points[RIGID], last.points[RIGID]), look.points[RIGID])
        rigid = float(np.sqrt(((moved - last.points[RIGID]) ** 2).sum(axis=1).mean())) / span
        light = abs(look.brightness - last.brightness) / max(last.brightness, 1.0)
        texture = float(np.abs(look.shading - last.shading).mean())
        blur = abs(math.log(max(look.sharpness, 1e-3) / max(last.sharpness, 1e-3)))
        return _Change(rigid, light, texture, blur)

    # -- the blink ----------------------------------------------------------------------------------------
    def _look_for_blink(self, now: float) -> None:
        """The newest frame as the reopening of a blink: an earlier shut frame of the run and an open one before it,
        at most blink_max_s before this one, that together look like a lid closing and opening (_candidate)."""
        run, lim = self._run, self.limits
        last = run[-1]
        for d in range(len(run) - 2, 0, -1):
            for o in range(d - 1, -1, -1):
                if last.at - run[o].at > lim.blink_max_s:
                    break
                found = self._candidate(run[o], run[d], last)
                if found is None:
                    continue
                drop, eyes = found
                if drop > self._deepest[0]:
                    self._deepest = (drop, _mean_open(run[o], last), eyes)
                if drop >= lim.blink_drop and eyes >= lim.eyes_min and self._consistent(run[o:]):
                    self.blink = self._blink_evidence(run[o:], drop, eyes, now)
                    return

    def _candidate(self, open_: _Frame, shut: _Frame, reopen: _Frame) -> tuple[float, float] | None:
        """(EAR drop, eye change) of open -> shut -> reopen, or None when it is no lid's shape: not back to
        blink_recover of the open eye, no drop at all, or eyes that changed between the open frames more than
        1 / eyes_ratio of what they changed at the shut one. The EAR first: it is cheap and prunes most triples."""
        lim = self.limits
        if any(reopen.ear[i] < lim.blink_recover * open_.ear[i] for i in (0, 1)):
            return None
        drop = min(1 - shut.ear[i] / ((open_.ear[i] + reopen.ear[i]) / 2 or 1e-6) for i in (0, 1))
        if drop <= 0:
            return None
        closing, opening = self._eye_change(open_, shut), self._eye_change(reopen, shut)
        eyes = min(*closing, *opening)  # each eye, when the lid closed and when it opened
        back = sum(self._eye_change(open_, reopen)) / 2
        if eyes < lim.eyes_ratio * back:
            return None
        return drop, eyes

    def _eye_change(self, a: _Frame, b: _Frame) -> tuple[float, float]:
        """_eye_change of each eye, remembered: a frame is compared with each of its neighbours several times."""
        key = (a.at, b.at)
        if key not in self._changes:
            if len(self._changes) > 4096:  # bound: a run is short, but a sitting's window can be long
                self._changes.clear()
            assert self._eyes is not None
            left, right = (_eye_change(a.eyes[i], b.eyes[i], self._eyes[i].mask) for i in (0, 1))
            self._changes[key] = (left, right)
        return self._changes[key]

    def _consistent(self, span: list[_Frame]) -> bool:
        """Frame to frame is not enough: a slow focus or light drift passes each step. Over the whole blink the
        face's brightness and sharpness must stay within the same limits."""
        light = [f.brightness for f in span]
        sharp = [max(f.sharpness, 1e-3) for f in span]
        return (max(light) - min(light)) / max(min(light), 1.0) <= self.limits.light_max and math.log(
            max(sharp) / min(sharp)
        ) <= self.limits.blur_max

    def _blink_evidence(self, span: list[_Frame], drop: float, eyes: float, now: float) -> LivenessEvidence:
        worst = _Change()
        for f in span[1:]:
            worst = worst.most(f.change)
        return LivenessEvidence(
            ear_open=round(_mean_open(span[0], span[-1]), 4), drop=round(drop, 4), eyes=round(eyes, 4),
            blink_s=round(span[-1].at - span[0].at, 3),
            rigid=round(worst.rigid, 4), light=round(worst.light, 4), texture=round(worst.texture, 4),
            blur=round(worst.blur, 4), turn=0.0, frames=self.frames, unsteady=self.unsteady,
            sitting_s=round(now - self.started, 3),
        )  # fmt: skip


def points68(marks: Mapping[str, Sequence[tuple[int, int]]]) -> np.ndarray:
    """dlib's 68 points in their own order, from face_recognition's named features (which repeat the lip corners
    and list the inner lips backwards)."""
    head = [p for name in _HEAD for p in marks[name]]
    top, bottom = list(marks["top_lip"]), list(marks["bottom_lip"])
    lips = top[0:7] + bottom[1:6] + top[7:12][::-1] + bottom[8:11][::-1]
    return np.array(head + lips, np.float64)


_HEAD = ("chin", "left_eyebrow", "right_eyebrow", "nose_bridge", "nose_tip", "left_eye", "right_eye")


@dataclass(frozen=True)
class _EyeBox:
    """One eye in the patch: the box around it with a margin of REGISTER pixels, enlarged UPSCALE times, and which
    of its pixels (without the margin) lie between the lids."""

    left: int
    top: int
    right: int  # exclusive, margin included
    bottom: int
    mask: np.ndarray  # bool, the box without its margin, enlarged

    def crop(self, patch: np.ndarray, scale: float) -> np.ndarray:
        box = patch[self.top : self.bottom, self.left : self.right].astype(np.float32) / scale
        return cv2.resize(box, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)


def _eye_boxes(points: np.ndarray) -> tuple[_EyeBox, _EyeBox]:
    """Each eye between its lids (slightly grown: a closing lid starts above the lid line), patch pixels."""
    boxes = []
    for eye in EYES:
        drawn = np.zeros((PATCH, PATCH), np.uint8)
        cv2.fillPoly(drawn, [np.round(points[eye]).astype(np.int32)], 1)
        mask = cv2.dilate(drawn, np.ones((3, 3), np.uint8))
        ys, xs = np.nonzero(mask)
        left, top = max(int(xs.min()) - REGISTER, 0), max(int(ys.min()) - REGISTER, 0)
        right, bottom = min(int(xs.max()) + 1 + REGISTER, PATCH), min(int(ys.max()) + 1 + REGISTER, PATCH)
        inner = mask[top:bottom, left:right].copy()
        inner[:REGISTER], inner[-REGISTER:], inner[:, :REGISTER], inner[:, -REGISTER:] = 0, 0, 0, 0
        enlarged = cv2.resize(inner, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_NEAREST) > 0
        boxes.append(_EyeBox(left, top, right, bottom, enlarged))
    return boxes[0], boxes[1]


def _eye_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """How much one eye changed from crop ``a`` to crop ``b`` (_EyeBox.crop: shares of the face's brightness), after
    the shift of ``b`` that explains most of it: the mean absolute difference between the lids."""
    margin = REGISTER * UPSCALE
    height, width = a.shape[0] - 2 * margin, a.shape[1] - 2 * margin
    inside = mask[margin:-margin, margin:-margin]
    fixed = a[margin : margin + height, margin : margin + width]
    shifted = np.lib.stride_tricks.sliding_window_view(b, (height, width))  # every shift of b, no copy
    differences = np.abs(shifted - fixed)[..., inside].mean(axis=-1)
    return float(differences.min())


def _mean_open(a: _Frame, b: _Frame) -> float:
    """The open eye's aspect ratio around a blink: both eyes, both open frames."""
    return (a.ear[0] + a.ear[1] + b.ear[0] + b.ear[1]) / 4


def _ear(eye: np.ndarray) -> float:
    width = float(np.linalg.norm(eye[0] - eye[3]))
    return float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / (2 * width + 1e-6)


def _parallax(reference: np.ndarray, points: np.ndarray) -> float:
    """How far the nose moved off where the face's outline says it should be, in interocular distances: the outline
    (jaw, eye corners) is mapped from the reference by a homography, which describes any motion of a flat picture
    exactly, so on a picture the nose lands where predicted; a head turning in 3-D moves the nose against it."""
    predicted = _apply(_homography(reference[OUTLINE], points[OUTLINE]), reference[NOSE])
    return float(np.linalg.norm(predicted - points[NOSE], axis=1).mean()) / _interocular(points)


def _interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[EYES[0]].mean(axis=0) - points[EYES[1]].mean(axis=0))) + 1e-6


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking ``src`` points onto ``dst`` (least squares over all of them): how a flat
    picture moves in front of a camera, whatever its tilt."""
    matrix, _ = cv2.findHomography(src.astype(np.float64), dst.astype(np.float64), 0)
    return np.eye(3) if matrix is None else np.asarray(matrix)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    moved = np.c_[points, np.ones(len(points))] @ matrix.T
    return np.asarray(moved[:, :2] / moved[:, 2:3])


def _plane_mask(points: np.ndarray) -> np.ndarray:
    """The face (jaw and brows' hull) without the eyes with their lids and the mouth, in patch pixels."""
    mask = np.zeros((PATCH, PATCH), np.uint8)
    hull = cv2.convexHull(points[:27].astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    for eye in EYES:
        centre = points[eye].mean(axis=0)
        width = float(np.linalg.norm(points[eye][0] - points[eye][3]))
        axes = (round(0.85 * width), round(0.75 * width))  # the lid skin above moves in a blink too
        cv2.ellipse(mask, (round(centre[0]), round(centre[1] - 0.15 * width)), axes, 0, 0, 360, 0, -1)
    mouth = cv2.convexHull(points[48:60].astype(np.int32))
    cv2.fillConvexPoly(mask, mouth, 0)
    mouth_mask = np.zeros_like(mask)
    cv2.fillConvexPoly(mouth_mask, mouth, 1)
    mask[cv2.dilate(mouth_mask, np.ones((7, 7), np.uint8)) > 0] = 0
    return mask > 0
