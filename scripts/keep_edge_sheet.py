"""Upper-face close-ups of detail transfer at the kept region's soft edge (docs/fullres.md, ``keep_full``): input |
the 128 px edit | keep_full 1 (the mask times the model's soft weight everywhere, the rule before) | keep_full 0.5
(the default), each brought to a 256 px aligned crop, from the cached edits of scripts/bench_fullres.py. Writes a
palette PNG (small enough to commit) to stdout.

    python scripts/keep_edge_sheet.py --cache /tmp/fr19 london_011_angry > docs/fullres/keepfull_report_brows.png
"""

import argparse
import sys

import cv2
import numpy as np
from PIL import Image, ImageDraw

from mien.detail import DetailSettings, transfer_detail
from mien.face import align

ROWS, COLS = slice(56, 150), slice(24, 232)  # brows to the nose tip in a 256 px crop


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="/tmp/fr", help="bench_fullres.py's --cache")
    ap.add_argument("cases", nargs="+", help="PERSON_LABEL, e.g. london_011_angry")
    args = ap.parse_args()
    rows = []
    for case in args.cases:
        d = np.load(f"{args.cache}/{case}.npz")
        photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
        outs = [transfer_detail(photo, crop, m, keep, lm, DetailSettings(keep_full=k)) for k in (1.0, 0.5)]
        tiles = [align.warp_to_crop(photo, m * 2, 256), cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)]
        tiles += [align.warp_to_crop(o, m * 2, 256) for o in outs]
        strip = np.hstack([np.pad(t[ROWS, COLS], ((14, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles])
        img = Image.fromarray(strip)
        title = f"{case}: input | 128 px edit | keep_full 1 (before) | keep_full 0.5 (default)"
        ImageDraw.Draw(img).text((2, 1), title, fill=(0, 0, 0))
        rows.append(np.asarray(img))
    sheet = Image.fromarray(np.vstack(rows)).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.save(sys.stdout.buffer, "PNG", optimize=True)


if __name__ == "__main__":
    main()
