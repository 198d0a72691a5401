"""Do training photos with hidden eyes (sunglasses) read as squinting or blinking? (session 9)

    python scripts/check_dark_eyes.py --annotations runs/annotations/annotations.parquet

Session 8 guessed that contrast guidance drew sunglasses on happy requests because MediaPipe reads
hidden eyes as squinting or blinking, so that the model had learnt sunglasses as part of a squint.
This finds the crops whose eye regions are much darker than their cheeks (a pixel heuristic on the
aligned template: the 80th percentile of grey level in two boxes around the template's eyes over the
median of two boxes on the cheeks; the darkest few hundred are mostly sunglasses, checked by eye) and
prints their mean eye, cheek and smile blendshapes beside the rest of the pool's. Prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mien.data.faces128 import Faces128
from mien.face.blendshape_names import BLENDSHAPE_NAMES

# boxes (y0, y1, x0, x1) on the 128 px template: eyes at (44, 52) and (84, 52), cheeks below them
EYES = ((47, 58, 34, 55), (47, 58, 74, 95))
CHEEKS = ((66, 80, 36, 52), (66, 80, 76, 92))
SHOWN = ("eyeBlinkLeft", "eyeBlinkRight", "eyeSquintLeft", "eyeSquintRight", "eyeLookDownLeft",
         "mouthSmileLeft", "mouthSmileRight")  # fmt: skip


def dark_eye_ratio(rgb: np.ndarray) -> float:
    grey = rgb.astype(np.float32).mean(-1)
    eyes = np.concatenate([grey[a:b, c:d].ravel() for a, b, c, d in EYES])
    cheeks = np.concatenate([grey[a:b, c:d].ravel() for a, b, c, d in CHEEKS])
    return float(np.percentile(eyes, 80) / max(np.median(cheeks), 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", type=Path, default=Path("runs/annotations/annotations.parquet"))
    ap.add_argument("--bins", type=float, nargs="+", default=[0.35, 0.45, 0.6])
    args = ap.parse_args()
    table = pq.read_table(args.annotations, columns=["key", "ok", "blendshapes"]).to_pydict()
    rows = {k: b for k, ok, b in zip(table["key"], table["ok"], table["blendshapes"]) if ok and b is not None}
    pool = Faces128()
    ratio, shapes = [], []
    for sample, rgb in pool:
        if sample.key in rows:
            ratio.append(dark_eye_ratio(rgb))
            shapes.append(rows[sample.key])
    ratio, shapes = np.array(ratio), np.array(shapes)
    cols = [BLENDSHAPE_NAMES.index(n) for n in SHOWN]
    edges = [0.0, *args.bins, np.inf]
    print("| eye/cheek ratio | crops | " + " | ".join(SHOWN) + " |")
    print("|---|---|" + "---|" * len(SHOWN))
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (ratio >= lo) & (ratio < hi)
        means = shapes[sel][:, cols].mean(0)
        print(f"| {lo:g}–{hi:g} | {sel.sum()} | " + " | ".join(f"{m:.2f}" for m in means) + " |")


if __name__ == "__main__":
    main()
