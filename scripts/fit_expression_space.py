"""Fit mien's expression space from the annotated pool and write it into the package resources.

    python scripts/fit_expression_space.py runs/annotations/annotations.parquet

Writes src/mien/resources/expression/{au_calibration,prototypes,blendshape_classifier}.json and
prints the check the data issue asks for: the blendshape classifier (trained on train ids only)
against the posed labels of the dev Taiwanese performers (20–22) and the London dev pairs, beside
the face-api classifier on the same crops.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np

from mien.data.annotate import load_annotations
from mien.data.faces128 import load_manifest
from mien.expression.basic import BASIC, display_spread, fit_prototypes
from mien.expression.classifier import fit_classifier

RES = Path(__file__).resolve().parents[1] / "src" / "mien" / "resources" / "expression"
PSEUDO_MIN_PROB = 0.9  # face-api confidence for a pseudo-label
PSEUDO_CAP = 1500  # per class, so the abundant neutral/happy faces do not swamp the rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("annotations", type=Path)
    args = ap.parse_args()
    a = load_annotations(args.annotations)
    man = {s.key: s for s in load_manifest()}
    rows = [man[k] for k in a["key"]]
    ok = a["ok"].astype(bool)
    split = np.array([s.split for s in rows])
    source = np.array([s.source for s in rows])
    label = np.array([s.expression or "" for s in rows])
    performer = np.array([s.identity or "" for s in rows])
    rating = np.array([
        (s.extra.get("observer_ratings") or {}).get("mean_intensity", {}).get(s.expression, np.nan)
        if s.expression else np.nan for s in rows], dtype=np.float64)
    bs = a["blendshapes"]

    shutil.copy(args.annotations.parent / "au_calibration.json", RES / "au_calibration.json")

    tw_train = ok & (split == "train") & (source == "taiwanese") & (label != "")
    protos = fit_prototypes(bs[tw_train], label[tw_train], performer[tw_train], rating[tw_train],
                            source=f"faces128 train Taiwanese performers, {int(tw_train.sum())} posed crops")
    protos.save(RES / "prototypes.json")

    faceapi_p = a["expression"]
    has_p = np.isfinite(faceapi_p).all(1)
    pseudo_lab = np.array(BASIC)[np.nan_to_num(faceapi_p).argmax(1)]
    rng = np.random.default_rng(0)
    pseudo = np.zeros(len(ok), bool)
    cand = ok & has_p & (split == "train") & (label == "") & (np.nan_to_num(faceapi_p).max(1) >= PSEUDO_MIN_PROB)
    for lab in BASIC:
        idx = np.flatnonzero(cand & (pseudo_lab == lab))
        pseudo[rng.permutation(idx)[:PSEUDO_CAP]] = True
    x = np.concatenate([bs[tw_train], bs[pseudo]])
    y = np.concatenate([label[tw_train], pseudo_lab[pseudo]])
    # Posed labels are the ground truth: weight them so they count as much as all pseudo-labels together.
    w = np.concatenate([np.full(tw_train.sum(), pseudo.sum() / max(tw_train.sum(), 1)), np.ones(pseudo.sum())])
    clf = fit_classifier(x, y, w, source=f"{int(tw_train.sum())} posed train Taiwanese crops + "
                         f"{int(pseudo.sum())} face-api pseudo-labels (p >= {PSEUDO_MIN_PROB}) from the train pool")
    clf.save(RES / "blendshape_classifier.json")

    print(f"prototypes: {protos.source}; intensity 1.0 = observer rating {protos.intensity_scale}; gains {protos.gain}")
    print("label       length of the mean movement   mean length of one display   ratio")
    for lab, (mean_len, len_mean) in display_spread(bs[tw_train], label[tw_train], performer[tw_train]).items():
        print(f"{lab:10s}  {mean_len:27.2f}   {len_mean:26.2f}   {len_mean / mean_len:5.1f}")
    print(f"classifier: {clf.source}; pseudo-labels per class:",
          {lab: int((pseudo & (pseudo_lab == lab)).sum()) for lab in BASIC})
    for name, sel in [("dev Taiwanese (ids 20-22)", ok & (split == "dev") & (source == "taiwanese") & (label != "")),
                      ("dev London (neutral/happy)", ok & (split == "dev") & (source == "london"))]:
        truth = label[sel]
        ours = clf.predict(bs[sel])
        theirs = np.array(BASIC)[np.nan_to_num(faceapi_p[sel]).argmax(1)]
        print(f"\n{name}: n={int(sel.sum())}")
        print(f"  blendshape classifier accuracy {np.mean(ours == truth):.3f}   face-api classifier {np.mean(theirs == truth):.3f}")
        for lab in BASIC:
            m = truth == lab
            if m.any():
                print(f"  {lab:<10} n={int(m.sum()):3d}  blendshape {np.mean(ours[m] == lab):.2f}  face-api {np.mean(theirs[m] == lab):.2f}")


if __name__ == "__main__":
    main()
