"""``mien train expression-space``: fit mien's expression space (AU calibration, label prototypes, the
blendshape classifier) from an annotated face pool and report the classifier on the dev performers.

Prototypes come from the posed train Taiwanese performers; the classifier from those posed crops plus
face-api pseudo-labels of confident unposed train crops, capped per class (mien.expression.basic,
mien.expression.classifier say why each is built as it is).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mien.errors import MienError


def expression_space_dir() -> Path:
    """The package's expression resources, which ``mien train expression-space`` writes by default."""
    return Path(__file__).resolve().parents[1] / "resources" / "expression"


PSEUDO_MIN_PROB = 0.9  # face-api confidence for a pseudo-label
PSEUDO_CAP = 1500  # per class, so the abundant neutral/happy faces do not swamp the rest


def fit_expression_space(annotations: Path, out: Path) -> list[str]:
    """Fit the expression space from an annotated pool (``mien annotate``) and write
    {au_calibration,prototypes,blendshape_classifier}.json to ``out``. Returns the report lines: the
    blendshape classifier (trained on train ids only) against the posed labels of the dev Taiwanese
    performers and the London dev pairs, beside the face-api classifier on the same crops."""
    from mien.data.annotate import load_annotations
    from mien.data.faces128 import load_manifest
    from mien.expression.basic import BASIC, display_spread, fit_prototypes
    from mien.expression.classifier import fit_classifier

    calibration = annotations.parent / "au_calibration.json"
    if not annotations.is_file() or not calibration.is_file():
        raise MienError(f"{annotations} and au_calibration.json beside it are needed; run `mien annotate` first")
    a = load_annotations(annotations)
    man = {s.key: s for s in load_manifest()}
    unknown = [k for k in a["key"] if k not in man]
    if unknown:
        raise MienError(f"{annotations}: {len(unknown)} keys not in the faces128 manifest (e.g. {unknown[0]}); "
                        "annotate this pool again")  # fmt: skip
    rows = [man[k] for k in a["key"]]
    ok = a["ok"].astype(bool)
    split = np.array([s.split for s in rows])
    source = np.array([s.source for s in rows])
    label = np.array([s.expression or "" for s in rows])
    performer = np.array([s.identity or "" for s in rows])
    rating = np.array([
        (s.extra.get("observer_ratings") or {}).get("mean_intensity", {}).get(s.expression, np.nan)
        if s.expression else np.nan for s in rows], dtype=np.float64)  # fmt: skip
    bs = a["blendshapes"]
    out.mkdir(parents=True, exist_ok=True)
    if calibration.resolve() != (out / "au_calibration.json").resolve():
        shutil.copy(calibration, out / "au_calibration.json")

    tw_train = ok & (split == "train") & (source == "taiwanese") & (label != "")
    protos = fit_prototypes(bs[tw_train], label[tw_train], performer[tw_train], rating[tw_train],
                            source=f"faces128 train Taiwanese performers, {int(tw_train.sum())} posed crops")  # fmt: skip
    protos.save(out / "prototypes.json")

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
                         f"{int(pseudo.sum())} face-api pseudo-labels (p >= {PSEUDO_MIN_PROB}) from the train pool")  # fmt: skip
    clf.save(out / "blendshape_classifier.json")

    lines = [f"prototypes: {protos.source}; intensity 1.0 = observer rating {protos.intensity_scale}; gains {protos.gain}",
             "label       length of the mean movement   mean length of one display   ratio"]  # fmt: skip
    for lab, (mean_len, len_mean) in display_spread(bs[tw_train], label[tw_train], performer[tw_train]).items():
        lines.append(f"{lab:10s}  {mean_len:27.2f}   {len_mean:26.2f}   {len_mean / mean_len:5.1f}")
    lines.append(f"classifier: {clf.source}; pseudo-labels per class: "
                 f"{ {lab: int((pseudo & (pseudo_lab == lab)).sum()) for lab in BASIC} }")  # fmt: skip
    for name, sel in [("dev Taiwanese (ids 20-22)", ok & (split == "dev") & (source == "taiwanese") & (label != "")),
                      ("dev London (neutral/happy)", ok & (split == "dev") & (source == "london"))]:  # fmt: skip
        truth = label[sel]
        ours = clf.predict(bs[sel])
        theirs = np.array(BASIC)[np.nan_to_num(faceapi_p[sel]).argmax(1)]
        lines += [f"{name}: n={int(sel.sum())}",
                  f"  blendshape classifier accuracy {np.mean(ours == truth):.3f}   "
                  f"face-api classifier {np.mean(theirs == truth):.3f}"]  # fmt: skip
        for lab in BASIC:
            m = truth == lab
            if m.any():
                lines.append(f"  {lab:<10} n={int(m.sum()):3d}  blendshape {np.mean(ours[m] == lab):.2f}  "
                             f"face-api {np.mean(theirs[m] == lab):.2f}")  # fmt: skip
    return lines
