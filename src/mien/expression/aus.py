"""Facial Action Units ↔ MediaPipe blendshapes.

mien has no image→AU model (none could be obtained here), so every AU number it reports is an
*estimate computed from MediaPipe blendshapes*, and every AU request is turned into blendshape
targets. The 12 AUs are FineFace's (Varanka et al. 2024): 1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26,
on FACS's 0–5 intensity scale (0 absent, 1–5 ≈ A–E).

Correspondence (FACS names from Ekman, Friesen & Hager, *FACS Manual*, 2002; blendshape meanings from
Apple ARKit's `ARFaceAnchor.BlendShapeLocation` documentation, whose 52 names MediaPipe reuses). The
pairing is approximate: a blendshape describes a surface movement, an AU a muscle; where one AU moves
several blendshapes, the AU's raw score is their mean.

Scale: raw score s (mean of the AU's blendshapes) → AU = 5·clip((s − rest)/(high − rest), 0, 1),
with `rest` the pool median and `high` the pool's 99.5th percentile of s, both measured on the
annotated faces128 pool (`mien annotate`, then `mien train expression-space`); the numbers live in
``resources/expression/au_calibration.json``. The inverse (for control) maps an AU intensity a to a
target for each of its blendshapes b: rest_b + (a/5)(high_b − rest_b), with the same per-blendshape
quantiles.

Sides: FACS codes a one-sided action with L or R after the number (AU12L: left lip corner pulled; FACS
Manual 2002, "Scoring asymmetries"). Where an AU's blendshapes come in Left/Right pairs, a control may
name one side (``AU12L=4``) and sets only that side's blendshapes; the 12 AU *estimates* stay two-sided.
Left and right are the person's own (their left eye is on the right of an unmirrored photo), which is
how MediaPipe names its blendshapes: on the bundled London example the eye whose iris sits nearer its
outer corner reads the higher eyeLookOut, and that is the image-right eye for ``eyeLookOutLeft``
(tests/test_expression_space.py checks it on the photo and on its mirror image).

Eye closure: FineFace's 12 AUs have no lid closure, so a wink (FACS AU46, one eye) could not be asked
for. :data:`CONTROL_AUS` adds AU43 (Eyes Closed, ARKit eyeBlink) as a control only: it can be requested,
two-sided or sided (AU43L is a left wink), but it is not among the 12 estimates that evaluation reports.
Its quantiles come from a seeded sample of the train pool (``scripts/fit_eye_closure.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from mien.errors import MienError
from mien.face.blendshape_names import BLENDSHAPE_NAMES

_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def index_of(name: str) -> int:
    return _INDEX[name]


@dataclass(frozen=True)
class ActionUnit:
    au: str
    facs_name: str
    blendshapes: tuple[str, ...]
    why: str


AUS: tuple[ActionUnit, ...] = (
    ActionUnit("AU1", "Inner Brow Raiser", ("browInnerUp",), "ARKit browInnerUp: upward movement of the inner brows"),
    ActionUnit("AU2", "Outer Brow Raiser", ("browOuterUpLeft", "browOuterUpRight"), "ARKit browOuterUp: outer brow up"),
    ActionUnit("AU4", "Brow Lowerer", ("browDownLeft", "browDownRight"), "ARKit browDown: downward movement of the brow"),
    ActionUnit("AU5", "Upper Lid Raiser", ("eyeWideLeft", "eyeWideRight"), "ARKit eyeWide: widening of the eyelids"),
    ActionUnit(
        "AU6",
        "Cheek Raiser",
        ("cheekSquintLeft", "cheekSquintRight", "eyeSquintLeft", "eyeSquintRight"),
        "orbicularis oculi raises the cheek and narrows the eye from below: ARKit cheekSquint + eyeSquint",
    ),
    ActionUnit("AU9", "Nose Wrinkler", ("noseSneerLeft", "noseSneerRight"), "ARKit noseSneer: raising of the nose sides"),
    ActionUnit("AU12", "Lip Corner Puller", ("mouthSmileLeft", "mouthSmileRight"), "ARKit mouthSmile: corners up and out"),
    ActionUnit("AU15", "Lip Corner Depressor", ("mouthFrownLeft", "mouthFrownRight"), "ARKit mouthFrown: corners down"),
    ActionUnit("AU17", "Chin Raiser", ("mouthShrugLower",), "ARKit mouthShrugLower: lower lip pushed up by the chin boss"),
    ActionUnit("AU20", "Lip Stretcher", ("mouthStretchLeft", "mouthStretchRight"), "ARKit mouthStretch: corners pulled sideways"),
    ActionUnit(
        "AU25",
        "Lips Part",
        ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight"),
        "no single blendshape; lips parting moves the lower lip down and the upper lip up (ARKit mouthLowerDown, mouthUpperUp)",
    ),
    ActionUnit("AU26", "Jaw Drop", ("jawOpen",), "ARKit jawOpen: opening of the lower jaw"),
)
AU_NAMES: tuple[str, ...] = tuple(a.au for a in AUS)
AU_MAX = 5.0
# Controls beyond the 12 estimated AUs (module docstring, "Eye closure").
CONTROL_AUS: tuple[ActionUnit, ...] = AUS + (
    ActionUnit("AU43", "Eyes Closed", ("eyeBlinkLeft", "eyeBlinkRight"),
               "ARKit eyeBlink: closure of the eyelids; one side is a wink (FACS AU46)"),
)
_BY_NAME = {a.au: a for a in CONTROL_AUS}
SIDES = {"L": "Left", "R": "Right"}  # FACS side letter -> MediaPipe/ARKit suffix (the person's own side)
# AUs whose blendshapes all come in Left/Right pairs: these can be asked for one side at a time.
SIDED_AUS: tuple[str, ...] = tuple(a.au for a in CONTROL_AUS if all(b.endswith(("Left", "Right")) for b in a.blendshapes))


def control_blendshapes(name: str) -> tuple[str, ...]:
    """The blendshapes a control sets: ``"AU12"`` both sides, ``"AU12L"`` only mouthSmileLeft."""
    au, side = split_side(name)
    bs = _BY_NAME[au].blendshapes
    return bs if side is None else tuple(b for b in bs if b.endswith(SIDES[side]))


def split_side(name: str) -> tuple[str, str | None]:
    """``"AU12L"`` -> ("AU12", "L"); ``"AU12"`` -> ("AU12", None). ``name`` as parse_au_control returns it."""
    return (name[:-1], name[-1]) if name[-1] in SIDES else (name, None)


@dataclass
class AUCalibration:
    """Pool quantiles: per AU (on the mean score) and per blendshape (for the inverse map)."""

    au_rest: dict[str, float]
    au_high: dict[str, float]
    bs_rest: dict[str, float]
    bs_high: dict[str, float]
    source: str = ""

    @classmethod
    def fit(cls, blendshapes: np.ndarray, source: str, q_rest: float = 50.0, q_high: float = 99.5) -> "AUCalibration":
        bs = np.asarray(blendshapes, dtype=np.float64)
        raw = raw_scores(bs)
        names = sorted({b for a in CONTROL_AUS for b in a.blendshapes})
        cols = bs[:, [index_of(n) for n in names]]
        return cls(
            au_rest=dict(zip(AU_NAMES, np.percentile(raw, q_rest, axis=0).round(6).tolist())),
            au_high=dict(zip(AU_NAMES, np.percentile(raw, q_high, axis=0).round(6).tolist())),
            bs_rest=dict(zip(names, np.percentile(cols, q_rest, axis=0).round(6).tolist())),
            bs_high=dict(zip(names, np.percentile(cols, q_high, axis=0).round(6).tolist())),
            source=source,
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path | None = None) -> "AUCalibration":
        path = _calibration_path() if path is None else path
        if not Path(path).is_file():
            raise MienError(f"AU calibration {path} is missing; reinstall mien, or rebuild it with `mien train expression-space ANNOTATIONS.parquet`")
        return cls(**json.loads(Path(path).read_text()))


def _calibration_path() -> Path:
    return Path(str(resources.files("mien") / "resources" / "expression" / "au_calibration.json"))


def raw_scores(blendshapes: np.ndarray) -> np.ndarray:
    """(..., 52) blendshape scores → (..., 12) mean score of each AU's blendshapes."""
    bs = np.asarray(blendshapes)
    return np.stack([bs[..., [index_of(b) for b in a.blendshapes]].mean(-1) for a in AUS], -1)


def blendshapes_to_aus(blendshapes: np.ndarray, calib: AUCalibration) -> np.ndarray:
    """(..., 52) → (..., 12) AU intensity *estimates* on 0–5."""
    raw = raw_scores(blendshapes)
    rest = np.array([calib.au_rest[a] for a in AU_NAMES])
    high = np.array([calib.au_high[a] for a in AU_NAMES])
    return AU_MAX * np.clip((raw - rest) / np.maximum(high - rest, 1e-6), 0.0, 1.0)


def aus_to_blendshapes(aus: dict[str, float], calib: AUCalibration, base: np.ndarray) -> np.ndarray:
    """Set the blendshapes of each requested AU on ``base`` (52,) so that they read back as that AU, in the
    order given (so ``{"AU12": 1, "AU12L": 4}`` is a lopsided smile); a sided name sets one side only."""
    out = np.array(base, dtype=np.float64, copy=True)
    for name, value in aus.items():
        control = parse_au_control(name)
        check_intensity(control, value)
        for b in control_blendshapes(control):
            if b not in calib.bs_rest:
                raise MienError(f"{control} is not calibrated in {calib.source!r}; rebuild the calibration "
                                "(scripts/fit_eye_closure.py --write)")
            out[index_of(b)] = calib.bs_rest[b] + (value / AU_MAX) * (calib.bs_high[b] - calib.bs_rest[b])
    return out


def parse_au_name(name: str) -> str:
    key = name.strip().upper().replace(" ", "")
    if key.isdigit():
        key = "AU" + key
    if key not in AU_NAMES:
        raise MienError(f"unknown Action Unit '{name}'; mien controls {', '.join(AU_NAMES)} (see `mien expressions --aus`)")
    return key


def parse_au_control(name: str) -> str:
    """A control name: one of the 12 AUs or AU43, optionally with a side letter (``12l`` -> ``AU12L``)."""
    key = name.strip().upper().replace(" ", "")
    if key.isdigit() or (key[:-1].isdigit() and key[-1:] in SIDES):
        key = "AU" + key
    au, side = split_side(key) if key else (key, None)
    if au not in _BY_NAME:
        raise MienError(f"unknown Action Unit '{name}'; mien controls {', '.join(a.au for a in CONTROL_AUS)}, "
                        f"and {', '.join(SIDED_AUS)} one side at a time with L or R (AU12L); see `mien expressions --aus`")
    if side is not None and au not in SIDED_AUS:
        raise MienError(f"{au} has no left and right ({', '.join(_BY_NAME[au].blendshapes)} is one movement); "
                        f"sided AUs are {', '.join(SIDED_AUS)}")
    return key


def check_intensity(au: str, value: float) -> None:
    if not (0.0 <= float(value) <= AU_MAX):
        raise MienError(f"{au}={value} is out of range; AU intensities are on the FACS 0–5 scale")


def parse_au_spec(spec: str) -> dict[str, float]:
    """'AU12=3,AU6=2,AU43R=5' → {'AU12': 3.0, 'AU6': 2.0, 'AU43R': 5.0}, with one-line errors for anything
    malformed; the order is kept (later entries win where they set the same blendshapes)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise MienError(f"cannot read '{part}' in --au; write AU=intensity pairs like AU12=3,AU6=2")
        name, value = part.split("=", 1)
        au = parse_au_control(name)
        try:
            v = float(value)
        except ValueError:
            raise MienError(f"{au}={value}: the intensity must be a number from 0 to 5") from None
        check_intensity(au, v)
        out[au] = v
    if not out:
        raise MienError("--au is empty; write AU=intensity pairs like AU12=3,AU6=2")
    return out


__all__ = ["AUS", "AU_NAMES", "AUCalibration", "BLENDSHAPE_NAMES", "CONTROL_AUS", "SIDED_AUS", "blendshapes_to_aus",
           "aus_to_blendshapes", "control_blendshapes", "parse_au_control", "parse_au_spec", "raw_scores"]
