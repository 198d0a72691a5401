"""Choose the darkened-eye thresholds (mien.evaluate.critic: DARK_EYES_THRESHOLD, DARK_UNDER_EYES_THRESHOLD) on real pairs.

For every dev person, each of their other real crops is treated as an "output" of their first crop: a
real change of expression in one sitting (same light and camera), never a model artefact. The
threshold is the 1st percentile of the measure's darkening over the tuning people (the Taiwanese and
Essex posed sets: squints, smiles, frowns and closed eyes), rounded down to 0.05, so a real change of
expression triggers it in at most about 1 % of pairs. The London people (those of the london-quick
benchmark the built-in model is measured on) are the check, reported beside it. CFP is reported but
not used: its photos of a person are taken years apart in different light, some with sunglasses,
which are real darkened eyes but not an expression change.

--measure eyes: the eye boxes against the cheek boxes (artefacts.dark_eyes); under_eyes: the band
under each eye against the outer cheeks (artefacts.dark_under_eyes).

    python scripts/tune_dark_eyes.py [--measure eyes|under_eyes] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from mien.data.faces128 import Faces128
from mien.evaluate.critic import eye_darkening, under_eye_darkening

TUNING = ("taiwanese", "essex94")
CHECK = ("london",)
MEASURES = {"eyes": eye_darkening, "under_eyes": under_eye_darkening}


def pairs(pool: Faces128, sources: tuple[str, ...], darkening=eye_darkening) -> np.ndarray:
    """``darkening(crop, first crop)`` for every other real crop of each person of ``sources`` against their first
    (a value, or a tuple of values per pair: scripts/tune_squeezed_eyes.py)."""
    by: dict[str, list] = {}
    for s in pool.samples:
        if s.source in sources and s.identity:
            by.setdefault(s.identity, []).append(s)
    out = []
    for samples in by.values():
        first = pool.image(samples[0])
        out += [darkening(pool.image(s), first) for s in samples[1:]]
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", choices=tuple(MEASURES), default="eyes", help="which darkening (default eyes)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    pool = Faces128(split="dev")
    darkening = MEASURES[args.measure]
    tune, check = pairs(pool, TUNING, darkening), pairs(pool, CHECK, darkening)
    threshold = math.floor(float(np.quantile(tune, 0.01)) * 20) / 20
    res = {"threshold": threshold, "tuning_pairs": len(tune), "tuning_p01": float(np.quantile(tune, 0.01)),
           "tuning_rate": float(np.mean(tune < threshold)), "check_pairs": len(check),
           "check_rate": float(np.mean(check < threshold)), "check_min": float(check.min())}
    cfp = pairs(pool, ("cfp",), darkening)
    res.update({"cfp_pairs": len(cfp), "cfp_rate": float(np.mean(cfp < threshold))})
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, separators=(",", ":"))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
