"""Close-ups of detail transfer under two or more settings (docs/fullres.md), from the cached edits of
scripts/bench_fullres.py. By default the kept region's soft edge (``keep_full``): upper-face crops, input | the
128 px edit | keep_full 1 (the mask times the model's soft weight everywhere, the rule before) | keep_full 0.5 (the
default), each brought to a 256 px aligned crop. ``--photo``: the whole face at 100 % zoom in the photo (the box of
bench_fullres's contact sheets), input | each variant. Writes a palette PNG (small enough to commit) to stdout.

    python scripts/keep_edge_sheet.py --cache /tmp/fr19 london_011_angry > docs/fullres/keepfull_report_brows.png
    python scripts/keep_edge_sheet.py --cache /tmp/fr19 --photo london_025_sad \\
        --variants 'before={"drift_editable": 0.99, "drift_fallback": false}' 'default={}' > docs/fullres/drift_report_london_025_sad.png
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fullres import detail_settings  # noqa: E402

from mien.detail import transfer_detail  # noqa: E402
from mien.face import align  # noqa: E402

ROWS, COLS = slice(56, 150), slice(24, 232)  # brows to the nose tip in a 256 px crop
KEEP_FULL = ['keep_full 1 (before)={"keep_full": 1.0}', 'keep_full 0.5 (default)={"keep_full": 0.5}']


def face_box(landmarks: np.ndarray, shape) -> tuple[slice, slice]:
    """bench_fullres's contact-sheet box: the landmarks' bounding box grown by 12 % of its width, in the photo."""
    (x0, y0), (x1, y1) = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    pad = 0.12 * (x1 - x0)
    rows = slice(int(max(y0 - pad, 0)), int(min(y1 + pad, shape[0])))
    return rows, slice(int(max(x0 - pad, 0)), int(min(x1 + pad, shape[1])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="/tmp/fr", help="bench_fullres.py's --cache")
    ap.add_argument("--variants", nargs="+", default=KEEP_FULL, help="NAME=JSON of DetailSettings fields")
    ap.add_argument("--photo", action="store_true", help="the whole face at 100 %% in the photo, not the upper face")
    ap.add_argument("cases", nargs="+", help="PERSON_LABEL, e.g. london_011_angry")
    args = ap.parse_args()
    named = [v.split("=", 1) for v in args.variants]
    rows = []
    for case in args.cases:
        d = np.load(f"{args.cache}/{case}.npz")
        photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
        outs = [transfer_detail(photo, crop, m, keep, lm, detail_settings(text)) for _, text in named]
        if args.photo:
            box = face_box(lm, photo.shape)
            tiles, head = [photo[box]] + [o[box] for o in outs], "input"
        else:
            tiles = [align.warp_to_crop(photo, m * 2, 256), cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)]
            tiles = [t[ROWS, COLS] for t in tiles + [align.warp_to_crop(o, m * 2, 256) for o in outs]]
            head = "input | 128 px edit"
        strip = np.hstack([np.pad(t, ((14, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles])
        img = Image.fromarray(strip)
        ImageDraw.Draw(img).text((2, 1), f"{case}: {head} | " + " | ".join(n for n, _ in named), fill=(0, 0, 0))
        rows.append(np.asarray(img))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = Image.fromarray(np.vstack(rows)).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.save(sys.stdout.buffer, "PNG", optimize=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
