"""Eye close-ups of detail transfer (docs/fullres.md, the eye rule): input | the fine-detail rule (the default) |
the eye rule (feature_regions "eyes", feature_edit 15-30), 3x nearest-neighbour zoom, from the cached edits of
scripts/bench_fullres.py. Writes a PNG to stdout.

    python scripts/eye_closeups.py london_018_disgusted london_002_sad london_016_fearful > docs/fullres/eyerule_report_eyes.png
"""

import sys, numpy as np, cv2
from PIL import Image, ImageDraw
from mien.detail import EYES, DetailSettings, transfer_detail
CACHE = "/tmp/fr"  # the bench's --cache
cases = sys.argv[1:]
rows = []
for c in cases:
    d = np.load(f"{CACHE}/{c}.npz")
    photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
    outs = [photo, transfer_detail(photo, crop, m, keep, lm, DetailSettings()),
            transfer_detail(photo, crop, m, keep, lm, DetailSettings(feature_regions="eyes", feature_edit=(15.0, 30.0)))]
    pts = lm[[i for g in EYES for i in g], :2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    px, py = 0.15 * (x1 - x0), 0.8 * (y1 - y0)
    box = (int(x0 - px), int(y0 - py), int(x1 + px), int(y1 + py))
    tiles = [Image.fromarray(o).crop(box) for o in outs]
    tiles = [t.resize((t.width * 3, t.height * 3), Image.NEAREST) for t in tiles]
    rows.append((c, tiles))
W = max(t[0].width for _, t in rows) * 3 + 8
sheet = Image.new("RGB", (W, sum(t[0].height + 14 for _, t in rows)), (255, 255, 255))
y = 0
for c, tiles in rows:
    ImageDraw.Draw(sheet).text((2, y + 1), f"{c}: input | fine-detail rule (default) | eye rule 15-30 (x3)", fill=(0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * (t.width + 4), y + 14))
    y += tiles[0].height + 14
sheet.save(sys.stdout.buffer, "PNG", optimize=True)
