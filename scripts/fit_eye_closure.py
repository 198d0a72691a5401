"""Calibrate the eye-closure control (AU43, eyeBlinkLeft/Right) on a seeded sample of the train pool.

    python scripts/fit_eye_closure.py [--n 3000] [--seed 0] [--write]

The shipped AU calibration (``resources/expression/au_calibration.json``) was fitted by `mien annotate`
over the whole train pool before eye closure was a control, so it has no quantiles for ``eyeBlink``.
This runs the same MediaPipe pass as `mien annotate` (:class:`mien.data.annotate.CropAnnotator`) on a
seeded random sample of train crops and takes the same quantiles (median, 99.5th percentile). It also
prints the sample's quantiles of blendshapes that the shipped file has, beside the shipped values, so
the size of the sampling error is visible. ``--write`` adds the eyeBlink values to the shipped file
(existing values are left unchanged).
"""

import argparse
import json

import numpy as np

from mien.data.annotate import CropAnnotator
from mien.data.faces128 import Faces128
from mien.expression.aus import AUCalibration, _calibration_path
from mien.face.blendshape_names import BLENDSHAPE_NAMES

NEW = ("eyeBlinkLeft", "eyeBlinkRight")
CHECK = ("mouthSmileLeft", "mouthSmileRight", "eyeSquintLeft", "browDownLeft", "jawOpen")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    faces = Faces128(split="train")
    idx = np.random.default_rng(args.seed).choice(len(faces), size=min(args.n, len(faces)), replace=False)
    ann = CropAnnotator("landmarks")
    bs = []
    for start in range(0, len(idx), 100):
        part = [faces[int(i)] for i in idx[start:start + 100]]
        t = ann([s.key for s, _ in part], [img for _, img in part]).to_pydict()
        bs += [b for b, ok in zip(t["blendshapes"], t["ok"]) if ok]
    ann.close()
    bs = np.asarray(bs, dtype=np.float64)
    col = {n: bs[:, BLENDSHAPE_NAMES.index(n)] for n in NEW + CHECK}
    shipped = AUCalibration.load()
    print(f"{len(bs)} of {len(idx)} sampled train crops read by MediaPipe (seed {args.seed})")
    print("blendshape          sample median  p99.5   shipped median  p99.5")
    for n in NEW + CHECK:
        ref = (shipped.bs_rest.get(n), shipped.bs_high.get(n))
        print(f"{n:20s} {np.median(col[n]):12.4f} {np.percentile(col[n], 99.5):7.4f}   {ref[0]!s:>14.8} {ref[1]!s:>6.6}")
    if args.write:
        path = _calibration_path()
        d = json.loads(path.read_text())
        for n in NEW:
            d["bs_rest"][n] = round(float(np.median(col[n])), 6)
            d["bs_high"][n] = round(float(np.percentile(col[n], 99.5)), 6)
        d["source"] += f"; eyeBlink: {len(bs)} sampled train crops (scripts/fit_eye_closure.py --n {args.n} --seed {args.seed})"
        path.write_text(json.dumps(d, indent=1))
        print("wrote", path)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
