"""What the face engine is configured with and what it answers: no OpenCV, dlib or face_recognition here,
so an agent without the face extra (a kiosk, a rating pad) can load attendance configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field

from protocol.settings import Section

# Sharpness is measured on the face box resized to this side: the encoder sees the face at about
# this size (a 150-px chip with 25 % padding around the face), and the variance of the Laplacian
# otherwise falls as the face gets bigger (1,400 at 36 px, 140 at 215 px for the same photo).
SHARPNESS_SIDE = 100
Reason = Literal["no_face", "multiple_faces", "too_small", "blurry", "unknown", "not_live", "cooldown"]
REASONS: tuple[Reason, ...] = get_args(Reason)


class FaceConfig(Section):
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
    liveness: Literal["off", "motion"] = Field(
        default="motion", description='"motion": the eyes must change between frames as a flat picture cannot'
    )
    liveness_frames: int = Field(
        default=3, ge=2, le=50, description="Frames of one person without eye movement before not_live is reported"
    )
    liveness_threshold: float = Field(
        default=0.2,
        gt=0,
        description="Least eye-region change after aligning the frames as a plane (rigid photo <= 0.11, blink >= 0.25)",
    )


@dataclass(frozen=True)
class FaceMatch:
    """A punch: who, the worst (largest) distance over the confirming frames, and how many frames it took."""

    staff_id: str
    distance: float
    frames: int


@dataclass(frozen=True)
class FaceReject:
    """Why no punch. ``detail`` is for the screen and the log: numbers and words, never an encoding or an
    image. process() never says "no_face": an empty view is None, the normal state of a terminal; the
    reason is there for callers that must explain a photo without a face (enrolment)."""

    reason: Reason
    detail: str = ""
