"""What the face engine is configured with and what it answers: no OpenCV, dlib or face_recognition here,
so an agent without the face extra (a kiosk, a rating pad) can load attendance configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field

from config.base import Section

# Sharpness is measured on the face box resized to this side: the encoder sees the face at about
# this size (a 150-px chip with 25 % padding around the face), and the variance of the Laplacian
# otherwise falls as the face gets bigger (1,400 at 36 px, 140 at 215 px for the same photo).
SHARPNESS_SIDE = 100
Reason = Literal["no_face", "multiple_faces", "too_small", "blurry", "unknown", "not_live", "cooldown"]
REASONS: tuple[Reason, ...] = get_args(Reason)
Challenge = Literal["none", "blink", "turn"]


class LivenessLimits(Section):
    """Thresholds of the blink check, measured on generated videos (tests/test_liveness.py): retune per hall."""

    window_s: float = Field(
        default=3.0, gt=0.4, le=30, description="A sitting has this long, from its first frame, to show a blink"
    )
    blink_drop: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="At the shut frame both eyes' aspect ratio must be down by this share of the two open frames "
        "around it (each eye's mean of them). Measured through the camera at 5 fps (40 synthetic blinks, 105 attack "
        "sittings): blinks 0.13-0.47 (0.13-0.24 where the landmarks follow the lid poorly: obama2, glasses); "
        "attacks, where their eyes changed like a lid's (eyes_ratio), at most 0.07",
    )
    blink_recover: float = Field(
        default=0.85, gt=0, le=1.5, description="... and the second open frame back to this share of the first"
    )
    eyes_min: float = Field(
        default=0.065,
        ge=0,
        le=2,
        description="Each eye's pixels must have changed by this much when the lid closed (first open frame to the "
        "shut one) and again when it opened (shut to the second open one): mean absolute difference between the "
        "lids, share of the face's brightness, after the best shift of up to 2 px, which undoes a picture's "
        "misalignment but not a lid over the iris. Measured: blinks 0.079-0.18; attacks, shaped like a lid "
        "(eyes_ratio), at most 0.05",
    )
    eyes_ratio: float = Field(
        default=2.5,
        ge=0,
        le=20,
        description="... and by this many times what they changed between the two open frames: a lid closes and "
        "opens again over the same eye, while a picture's misaligned, re-lit or re-focused eye drifts. Measured: "
        "every blink passes 3.0, an attack (a turned photo behind glasses) passed 1.5 and none 2.0",
    )
    blink_max_s: float = Field(
        default=1.5, gt=0.1, le=5, description="From the last open frame before the drop to the first one after"
    )
    rigid_max: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Largest residual of the rest of the face's landmarks (nose, eye corners, jaw) after a "
        "homography fit to the previous frame, in interocular distances: the face must move as one piece",
    )
    light_max: float = Field(
        default=0.06, gt=0, le=1, description="Largest change of the face's mean brightness between frames (share)"
    )
    texture_max: float = Field(
        default=0.15,
        gt=0,
        le=3,
        description="Largest change of the face outside the eyes between aligned frames (mean absolute difference "
        "of its shading, as shares of its brightness): a reflection, a shadow or moiré moving over the face plane",
    )
    blur_max: float = Field(
        default=0.4, gt=0, le=5, description="Largest change of sharpness between frames, |ln(ratio)|: a focus change"
    )
    turn_min: float = Field(
        default=0.2,
        gt=0,
        le=0.5,
        description='challenge "turn": the nose must move off where the outline of the face (jaw, eye corners) '
        "puts it by this many interocular distances (parallax: a flat picture has none, but landmark noise and a "
        "photo turned 35 degrees read up to 0.14; a head turned 15 degrees moves the nose tip about 0.15-0.2)",
    )


class FaceSiteSettings(Section):
    """Set per site at the centre for all its face terminals; each runs its own until the centre's arrive."""

    # The centre (broker/sites.py ``face``) carries them in each terminal's desired config (``face``,
    # agent/desired.py); the terminal applies them from its next frame. Defaults: the measurements each field cites.

    threshold: float = Field(
        default=0.5,
        gt=0,
        le=1.0,
        description=(
            "Largest face distance accepted as a match. Measured on real photos: same person 0.33-0.43, "
            "different people 0.70-0.88; 0.5 leaves 0.07 to the same person and 0.20 to a stranger "
            "(the library default 0.6 is loose: peers.md lesson 10)"
        ),
    )
    liveness: Literal["off", "blink"] = Field(
        default="blink",
        description='"blink": a blink (eye aspect ratio down and back, the face otherwise rigid) must be seen',
    )
    challenge: Challenge = Field(
        default="none",
        description=(
            '"blink": the screen asks for a blink; "turn": it asks for a head turn, needed besides the blink '
            "(a turn is 3-D: the nose moves against the face's outline, which no flat picture does)"
        ),
    )
    limits: LivenessLimits = Field(
        default_factory=LivenessLimits, description="What a blink must look like (per-site tuning)"
    )


class FaceConfig(FaceSiteSettings):
    """The terminal's face engine. The site's part (FaceSiteSettings) is the terminal's own until the centre's
    arrives; the rest depends on where the camera hangs and stays local."""

    detect_scale: float = Field(
        default=0.5,
        gt=0,
        le=1.0,
        description=(
            "Detect faces on the frame scaled by this (encoding uses the full-size frame). HOG without "
            "upsampling finds faces of about 80 px, so 0.5 sees faces from about 120-140 px in the full frame"
        ),
    )
    min_face_px: int = Field(
        default=80, ge=20, description="Smallest face height (full frame, px) analysed; smaller is too_small"
    )
    min_sharpness: float = Field(
        default=30.0,
        ge=0,
        description=(
            f"Least variance of the Laplacian of the face box resized to {SHARPNESS_SIDE} px. Measured: sharp "
            "faces 160-1,500; Gaussian blur sigma 3: 13-83, sigma 6: 4-22, where the same person drifts to 0.54"
        ),
    )
    confirm_frames: int = Field(
        default=2, ge=1, le=50, description="The same person matched in this many consecutive analysed frames"
    )
    cooldown_s: float = Field(
        default=30.0, ge=0, description="After a punch, the same person is not punched again for this long"
    )

    def with_site(self, site: FaceSiteSettings) -> FaceConfig:
        """This terminal's config with its site's settings in place of its own (validated models both)."""
        return self.model_copy(update={name: getattr(site, name) for name in FaceSiteSettings.model_fields})


@dataclass(frozen=True)
class FaceMatch:
    """A punch: who, the worst (largest) distance over the confirming frames, and how many frames it took."""

    staff_id: str
    distance: float
    frames: int
    liveness: LivenessEvidence | None = None  # None with liveness "off"


@dataclass(frozen=True)
class FaceReject:
    """Why no punch. ``detail`` is for the screen and the log: numbers and words, never an encoding or an
    image. process() never says "no_face": an empty view is None, the normal state of a terminal; the
    reason is there for callers that must explain a photo without a face (enrolment)."""

    reason: Reason
    detail: str = ""
    liveness: LivenessEvidence | None = None  # not_live: what the sitting showed
    staff_id: str | None = None  # not_live, cooldown: whom the face matched (the centre links later punches to it)


@dataclass(frozen=True)
class FaceChallenge:
    """A sitting of an enrolled face has begun and the site asks for a gesture: show it on the screen."""

    staff_id: str
    kind: Literal["blink", "turn"]


@dataclass(frozen=True)
class LivenessEvidence:
    """What a sitting showed, as numbers (never pixels): the punch carries them so the centre can audit and retune.
    The ear_* are eye aspect ratios (mean of both eyes) after aligning the face to the sitting's first frame; the
    other maxima are over the frames of the blink (or, without one, over the sitting) and compare with
    LivenessLimits of the same name."""

    ear_open: float  # the open eye around the deepest drop seen (both eyes, both open frames)
    drop: float  # deepest drop of both eyes at once between two open frames, the eyes' pixels shaped like a lid's
    # (eyes_ratio), as a share of the open frames' EAR (0: no such drop)
    eyes: float  # the least change of either eye's pixels at that drop, closing or opening (LivenessLimits.eyes_min)
    blink_s: float | None  # last open frame before the drop to the first open one after; None: no blink
    rigid: float
    light: float
    texture: float
    blur: float
    turn: float  # largest parallax of the nose against the face's outline, interocular distances
    frames: int  # frames of the sitting
    unsteady: int  # of which changed too much from the one before to count (light, blur, texture, rigidity)
    sitting_s: float  # first frame of the sitting to this outcome
    challenge: Challenge = "none"  # what the screen asked of this sitting (the site's challenge when it began)
