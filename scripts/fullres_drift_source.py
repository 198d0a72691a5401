"""Where the colour drift detail transfer removes comes from (docs/fullres.md, "the decoder's reconstruction as the
reference"): over the still face pixels the drift is measured on (flow zero, inside the face oval, the model's
kept-region weight above ``drift_editable``), the median of the low-passed difference (``residual_sigma``) of the
edit and the photo's crop, of the edit and the decoder's reconstruction of that crop, and of the reconstruction and
the crop; per image its largest channel, and the mean of that per source. Also what one colour leaves: the RMS over
those pixels of the edit's low-passed difference from the photo's crop less its median (the part of the still skin's
change that drift removal cannot take out).

    python scripts/fullres_drift_source.py --raw /tmp/ec/raw --split tune --cache /tmp/ec/cache   # essex 5, london 7
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_fullres import cached_edits, people, reconstructions, source_split_arguments, split_people  # noqa: E402

from mien.detail import DEFAULT, DetailSettings, _blur, _polygon_mask, crop_flow, face_oval  # noqa: E402
from mien.face import align  # noqa: E402
from mien.paste import editable_region  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source_split_arguments(ap)
    args = ap.parse_args()
    decoded = reconstructions(DetailSettings(reference="decoded"))
    for source, n in zip(("essex", "london"), args.people):
        sizes = []
        for _, _, d in cached_edits(args.cache, split_people(people(args.raw), args.split, n, source)):
            crop, edit = align.warp_to_crop(d["photo"], d["matrix"]), d["crop"]
            oval = _polygon_mask(face_oval(d["landmarks"], d["matrix"]), 128)
            still = (oval > 0.99) & (np.linalg.norm(crop_flow(crop, edit), axis=2) == 0)
            still &= editable_region(str(d["keep"])) > DEFAULT.drift_editable
            if still.sum() <= 50:
                continue
            med = lambda a, b: np.abs(np.median(  # noqa: E731
                _blur(a.astype(np.float32) - b, DEFAULT.residual_sigma)[still], axis=0)).max()
            recon = decoded(d["photo"], d["matrix"])
            low = _blur(edit.astype(np.float32) - crop, DEFAULT.residual_sigma)[still]
            spread = float(np.sqrt(((low - np.median(low, axis=0)) ** 2).mean()))
            sizes.append((med(edit, crop), med(edit, recon), med(recon, crop), spread))
        s = np.mean(sizes, axis=0)
        print(f"{source}: {len(sizes)} images; largest channel of the still-face median, mean: edit - photo's crop "
              f"{s[0]:.2f}, edit - reconstruction {s[1]:.2f}, reconstruction - photo's crop {s[2]:.2f} grey levels; "
              f"edit - photo's crop less its median, RMS {s[3]:.2f}")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
