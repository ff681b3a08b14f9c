"""Video of a face for the liveness tests and bench: attacks made from real photos, and genuine sittings made as
honestly as a machine without a camera allows.

Attacks (all from a photo framed as a 640x480 camera frame, camera noise and JPEG on every frame):

- ``still``: the photo held still in front of the camera;
- ``moved``: held in a hand, drifting smoothly (shift up to 24 px, turn up to 6 degrees, scale up to 8 %);
- ``turned``: the photo's plane turned about its vertical and horizontal axes (up to 35 and 25 degrees): the
  eyes foreshorten as the picture tilts back, which is what fools an eye aspect ratio read on its own;
- ``reflection``: moved gently under a bright band sweeping across it (a glossy print or a phone screen under
  room lights), the attack that passed the old motion check for every person tried;
- ``focus``: brought towards the camera while its autofocus hunts (blur sigma up to 2.4 and back);
- ``screen``: shown on a screen (RGB sub-pixel stripes, the screen's gamma and a slight flicker) filmed by the
  camera, whose sampling of the pixel grid makes moiré that shifts as the screen moves. Its moiré is dense enough
  that the detector loses some faces (biden's is found in about 5 frames of 17, never twice running, so never
  confirmed): such a replay is not even matched, which stops it as surely but does not test the liveness check;
- ``screen_close``: the same screen held closer (its pixels 1.5 camera pixels wide instead of 1.07): milder moiré,
  still shifting, and every face found, so the sitting reaches the liveness check and must be refused there.

Genuine sittings: the same photo with a blink *synthesised* by warping each eye along its landmarks (the skin
above the upper lid is stretched down over the eye and the eye is squeezed under it), with a small living
sway and camera noise. Where this stops being evidence: it shows the detector follows a lid that closes over
the eye on a face that otherwise stays rigid; it says nothing about real lids (lashes, the 3-D shading of a
closing lid, people who half-blink or wear thick glasses), whose numbers only a real camera on real staff
gives: the punch carries them (LivenessEvidence) so each hall can retune. And since the "genuine" sitting is
itself a warped picture, a screen replaying such a warped video would pass as it does: see
docs/threat-model.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from drivers.face.gallery import load_face_recognition
from tests.support.faces import camera_noise, framed

ATTACKS = ("still", "moved", "turned", "reflection", "focus", "screen", "screen_close")
VIDEO_FPS = 25.0  # what the files are written at: the camera picks its own frames off this timeline


@dataclass(frozen=True)
class Motion:
    """A rigid pose of the picture at one instant: shift (px), in-plane turn (deg), scale, out-of-plane turn."""

    dx: float = 0.0
    dy: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    yaw: float = 0.0  # degrees about the picture's vertical axis
    pitch: float = 0.0  # about its horizontal axis


def posed(frame: np.ndarray, m: Motion) -> np.ndarray:
    """The frame as a flat picture in pose ``m``, seen by a pinhole camera (focal length about the frame width)."""
    height, width = frame.shape[:2]
    focal = float(width)
    centre = np.array([width / 2, height / 2])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64) - centre
    yaw, pitch, roll = (math.radians(a) for a in (m.yaw, m.pitch, m.roll))
    rot = _rotation(yaw, pitch, roll)
    points3 = np.c_[corners * m.scale, np.zeros(4)] @ rot.T + np.array([0, 0, focal])
    seen = points3[:, :2] * focal / points3[:, 2:3] + centre + np.array([m.dx, m.dy])
    matrix = cv2.getPerspectiveTransform((corners + centre).astype(np.float32), seen.astype(np.float32))
    return cv2.warpPerspective(frame, matrix, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=(128,) * 3)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _wave(t: float, period: float, phase: float = 0.0) -> float:
    return math.sin(2 * math.pi * t / period + phase)


def _hand(t: float, amount: float = 1.0) -> Motion:
    """A hand holding something up: slow drift in every direction, never the same twice."""
    return Motion(
        dx=24 * amount * _wave(t, 2.3),
        dy=14 * amount * _wave(t, 1.7, 1.0),
        roll=6 * amount * _wave(t, 2.9, 0.5),
        scale=1 + 0.08 * amount * _wave(t, 3.1, 2.0),
    )


def reflection_band(frame: np.ndarray, t: float, strength: float = 90.0) -> np.ndarray:
    """A soft bright band at 30 degrees sweeping across the frame every 2 s (a light reflected by gloss)."""
    height, width = frame.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xx * math.cos(math.radians(30)) + yy * math.sin(math.radians(30))
    centre = -100 + (width + 300) * ((t / 2.0) % 1.0)
    band = strength * np.exp(-(((along - centre) / 45.0) ** 2))
    return np.clip(frame.astype(np.float32) + band[..., None], 0, 255).astype(np.uint8)


def on_screen(frame: np.ndarray, m: Motion, t: float, pixel: float = 1.07) -> np.ndarray:
    """The frame shown on a screen (each pixel three sub-pixel columns R, G, B and a dark row gap, the screen's
    gamma, a 3 % flicker) and filmed with each screen pixel ``pixel`` camera pixels wide: at 1.07 the camera samples
    the sub-pixel grid 2.8 of them to its pixel, a pitch that does not divide, which is moiré (at 1.5, two to its
    pixel: milder, the screen held closer); as the screen moves, the moiré shifts."""
    height, width = frame.shape[:2]
    lit = np.clip(255 * (frame.astype(np.float32) / 255) ** 0.8 * (1 + 0.03 * _wave(t, 0.37)), 0, 255)
    grid = np.zeros((height * 3, width * 3, 3), np.float32)
    wide = np.repeat(np.repeat(lit, 3, axis=0), 3, axis=1)
    for channel, column in ((2, 0), (1, 1), (0, 2)):  # BGR frame; R, G, B sub-pixels left to right
        grid[:, column::3, channel] = wide[:, column::3, channel] * 2.6
    grid[2::3] *= 0.5  # the gap between pixel rows
    grid = cv2.GaussianBlur(grid, (0, 0), 1.1)  # the lens softens the grid, but not enough to remove it
    size = (round(width * pixel), round(height * pixel))
    filmed = cv2.resize(np.clip(grid * 1.5, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_LINEAR)
    x0, y0 = (size[0] - width) // 2, (size[1] - height) // 2
    return posed(np.ascontiguousarray(filmed[y0 : y0 + height, x0 : x0 + width]), m)


def attack_frame(base: np.ndarray, kind: str, t: float, rng: np.random.Generator) -> np.ndarray:
    """One camera frame of attack ``kind`` at ``t`` seconds."""
    if kind == "still":
        image = base
    elif kind == "moved":
        image = posed(base, _hand(t))
    elif kind == "turned":
        image = posed(base, Motion(yaw=35 * _wave(t, 2.6), pitch=25 * _wave(t, 1.9, 0.7), dx=8 * _wave(t, 3.0)))
    elif kind == "reflection":
        image = reflection_band(posed(base, _hand(t, 0.4)), t)
    elif kind == "focus":
        approach = Motion(scale=0.85 + 0.3 * min(t / 3.0, 1.0), dx=6 * _wave(t, 2.0))
        sigma = 2.4 * abs(_wave(t, 1.6))
        image = posed(base, approach)
        image = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.3 else image
    elif kind == "screen":
        image = on_screen(base, _hand(t, 0.5), t)
    elif kind == "screen_close":
        image = on_screen(base, _hand(t, 0.5), t, pixel=1.5)
    else:
        raise ValueError(f"no attack {kind!r}: one of {', '.join(ATTACKS)}")
    return camera_noise(image, rng)


def attack(name: str, kind: str, seconds: float, seed: int = 0, fps: float = VIDEO_FPS) -> list[np.ndarray]:
    """Frames of attack ``kind`` with the photo ``name``, ``seconds`` long at ``fps``."""
    rng = np.random.default_rng(seed)
    base = framed(name)
    return [attack_frame(base, kind, i / fps, rng) for i in range(round(seconds * fps))]


# -- genuine: a blink warped along the landmarks ---------------------------------------------------------


def eye_landmarks(frame_bgr: np.ndarray) -> dict[str, np.ndarray]:
    rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
    marks = load_face_recognition().face_landmarks(rgb, model="large")
    if len(marks) != 1:
        raise ValueError(f"a blink needs exactly one face, found {len(marks)}")
    return {name: np.array(marks[0][name], np.float64) for name in ("left_eye", "right_eye")}


def blinked(frame_bgr: np.ndarray, closure: float, eyes: dict[str, np.ndarray]) -> np.ndarray:
    """Both eyes ``closure`` shut (0 open, 1 shut): for each column of the eye, the skin above the upper lid
    is stretched down to the new lid line and the eye between the lids squeezed below it."""
    if closure <= 0:
        return frame_bgr
    height, width = frame_bgr.shape[:2]
    map_y, map_x = np.mgrid[0:height, 0:width].astype(np.float32)
    for eye in eyes.values():
        _close_one(eye, min(closure, 1.0) * 0.92, map_y)
    return cv2.remap(frame_bgr, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _close_one(eye: np.ndarray, closure: float, map_y: np.ndarray) -> None:
    # dlib's 68-point eye: 0 outer/inner corner, 1-2 upper lid, 3 the other corner, 4-5 lower lid
    upper = eye[[0, 1, 2, 3]]
    lower = eye[[0, 5, 4, 3]]
    if upper[0, 0] > upper[3, 0]:
        upper, lower = upper[::-1], lower[::-1]
    x0, x1 = math.floor(upper[0, 0]), math.ceil(upper[3, 0])
    eye_w = upper[3, 0] - upper[0, 0]
    skin = 0.45 * eye_w  # lid skin above the lid line that moves with it
    for x in range(x0, x1 + 1):
        y_up = float(np.interp(x, upper[:, 0], upper[:, 1]))
        y_lo = float(np.interp(x, lower[:, 0], lower[:, 1]))
        gap = y_lo - y_up
        if gap <= 0.5:
            continue
        new_up = y_up + closure * gap
        top = y_up - skin
        rows = np.arange(math.floor(top), math.ceil(y_lo) + 1)
        rows = rows[(rows >= 0) & (rows < map_y.shape[0])]
        ys = rows.astype(np.float32)
        src = np.where(
            ys <= new_up,
            top + (ys - top) * (y_up - top) / max(new_up - top, 1e-3),
            y_up + (ys - new_up) * gap / max(y_lo - new_up, 1e-3),
        )
        src = np.where((ys >= top) & (ys <= y_lo), src, ys)
        map_y[rows, x] = src.astype(np.float32)


def blink_profile(start: float, closed_s: float) -> Callable[[float], float]:
    """Lid closure over time: closing in 80 ms, shut ``closed_s``, opening in 120 ms (a natural blink: about
    0.1 s shut; a deliberate one, as asked for on screen: 0.3 s)."""

    def closure(t: float) -> float:
        u = t - start
        if u < 0 or u > 0.08 + closed_s + 0.12:
            return 0.0
        if u < 0.08:
            return u / 0.08
        if u < 0.08 + closed_s:
            return 1.0
        return 1.0 - (u - 0.08 - closed_s) / 0.12

    return closure


def genuine(
    name: str, seconds: float, blinks: tuple[float, ...] = (0.5,), closed_s: float = 0.3, seed: int = 0,
    fps: float = VIDEO_FPS,
) -> list[np.ndarray]:  # fmt: skip
    """Someone standing at the terminal: a slight sway (2 px, half a degree), camera noise, and a blink starting at
    each of ``blinks`` (seconds)."""
    rng = np.random.default_rng(seed)
    base = framed(name)
    eyes = eye_landmarks(base)
    profiles = [blink_profile(start, closed_s) for start in blinks]
    frames = []
    for i in range(round(seconds * fps)):
        t = i / fps
        closure = max((p(t) for p in profiles), default=0.0)
        sway = Motion(dx=2 * _wave(t, 3.3), dy=1.5 * _wave(t, 2.7, 1), roll=0.5 * _wave(t, 4.1, 2))
        frames.append(camera_noise(posed(blinked(base, closure, eyes), sway), rng))
    return frames


def sampled(frames: list[np.ndarray], fps: float, video_fps: float = VIDEO_FPS) -> Iterator[tuple[float, np.ndarray]]:
    """(t, frame) at ``fps`` off a timeline written at ``video_fps``: the frames Camera picks from a file."""
    step, due = video_fps / fps, 0.0
    for i, frame in enumerate(frames):
        if i + 1e-6 >= due:
            due += step
            yield i / video_fps, frame
