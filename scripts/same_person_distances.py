"""Face-api distances between photos of one London Set person and of two different people, as the one-person
check of `mien generate` and `mien personalize` measures them (:mod:`mien.face.one_person`): each photo
aligned by mien (the dev split's ``*.raw.jpg``), its face-api descriptor, the distance of every pair.

    tar xf shared/data/faces128/dev.tar -C /tmp/raw --wildcards '*raw.jpg'
    python scripts/same_person_distances.py --raw /tmp/raw --split tune
    python scripts/same_person_distances.py --raw /tmp/raw --split report

Each London person has a neutral and a smiling photo: one same-person pair per person (the expression
differs, as between a user's photos), and every pair of two people's neutral photos is a different-person
pair. People are split as in scripts/bench_fullres.py (tuning: every fourth, and london_001).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from bench_fullres import people, split_people  # the tuning / report people of docs/fullres.md
from mien.face.landmarker import FaceLandmarker
from mien.io.image import load_rgb
from mien.models.identity import IdentityEncoder
from mien.pipeline import align_photos

THRESHOLDS = (0.45, 0.5, 0.55, 0.6)


@torch.no_grad()
def descriptors(paths: list[Path]) -> np.ndarray:
    with FaceLandmarker(num_faces=2) as landmarker:
        aligned = align_photos(landmarker, [load_rgb(p) for p in paths], [str(p) for p in paths])
    assert not aligned.skipped, aligned.skipped
    x = torch.from_numpy(np.stack(aligned.crops)).permute(0, 3, 1, 2).float()
    return IdentityEncoder.from_weights(mobilefacenet=False).faceapi(x).double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True, help="folder with the dev split's *.raw.jpg")
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    args = ap.parse_args()
    chosen = [p for p, _ in split_people(people(args.raw), args.split, 10**6, "london")]
    paths = [args.raw / f"{p}_{e}.raw.jpg" for p in chosen for e in ("neutral", "happy")]
    d = descriptors(paths).reshape(len(chosen), 2, -1)
    same = np.linalg.norm(d[:, 0] - d[:, 1], axis=1)
    pairs = list(itertools.combinations(range(len(chosen)), 2))
    other = np.array([np.linalg.norm(d[i, 0] - d[j, 0]) for i, j in pairs])
    closest = sorted(zip(other, pairs))[:5]
    print(json.dumps({
        "split": args.split, "people": len(chosen),
        "same": {"pairs": len(same), "median": round(float(np.median(same)), 3), "max": round(float(same.max()), 3),
                 "worst": chosen[int(same.argmax())]},
        "different": {"pairs": len(other), "min": round(float(other.min()), 3),
                      "median": round(float(np.median(other)), 3),
                      "closest": [f"{chosen[i]}/{chosen[j]} {v:.3f}" for v, (i, j) in closest]},
        # at each threshold: same-person pairs kept together, different-person pairs passed as one person
        "at": {t: {"same_kept": round(float((same < t).mean()), 3), "different_passed": int((other < t).sum())}
               for t in THRESHOLDS},
    }, separators=(",", ":")))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
