"""Choose the squeezed-eye cut (mien.evaluate.critic.SQUEEZED_EYES_CLOSURE) on real expression changes.

As scripts/tune_dark_eyes.py does, each other real crop of a Taiwanese or Essex dev person (the tuning
people) is treated as an "output" of their first crop: a real change of expression, never an artefact. So
every such pair the under-eye check flags is a false alarm, and all of them are eyes squeezed nearly
shut. The cut is the lowest eye closure (the mean of MediaPipe's eyeBlinkLeft and eyeBlinkRight on the
"output") among them, rounded down to 0.05: every real squeeze that darkens the band is counted as a
squeeze. Real pairs are used rather than the tuning people's outputs because they need no judging by
eye. The London pairs are reported beside it as the check.

    python scripts/tune_squeezed_eyes.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from tune_dark_eyes import CHECK, TUNING, pairs  # the same real pairs (scripts/ is the script's own folder)

from mien.data.faces128 import Faces128
from mien.evaluate import critic as C
from mien.face.landmarker import FaceLandmarker


def darkening_and_closure(landmarker: FaceLandmarker):
    """(output, first) -> (under-eye darkening, the output's eye closure; NaN where MediaPipe finds no face)."""

    def measure(im: np.ndarray, first: np.ndarray) -> tuple[float, float]:
        faces = landmarker.detect(im)
        return C.under_eye_darkening(im, first), C.eye_closure(faces[0].blendshapes) if faces else math.nan

    return measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    pool = Faces128(split="dev")
    with FaceLandmarker() as lm:
        tune, check = (pairs(pool, group, darkening_and_closure(lm)) for group in (TUNING, CHECK))
    flagged = tune[tune[:, 0] < C.DARK_UNDER_EYES_THRESHOLD]
    cut = math.floor(float(flagged[:, 1].min()) * 20) / 20
    res = {"cut": cut, "tuning_pairs": len(tune), "tuning_flagged": len(flagged),
           "tuning_flagged_closure": sorted(round(float(c), 3) for c in flagged[:, 1]),
           "tuning_squeezed_rate": float(np.mean(tune[:, 1] >= cut)), "check_pairs": len(check),
           "check_squeezed_rate": float(np.mean(check[:, 1] >= cut)), "check_max_closure": float(np.nanmax(check[:, 1]))}
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, separators=(",", ":"))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
