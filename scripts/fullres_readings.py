"""Where the full-resolution output's face-api expression reading goes (docs/fullres.md, issue 19): the same
images read through different measurement paths, on the edits ``scripts/bench_fullres.py`` cached.

Images per person and label: the input photo, the 128 px edit, the edit pasted with the crop paste
(``paste_into_photo``) and with detail transfer (``transfer_detail``, ``--settings``). Readings (face-api's 7
probabilities on its 150 px dlib chip, as :class:`mien.analysis.FaceAnalyzer` computes them):

- ``full``: the full-resolution image, landmarks re-detected (what bench_fullres reports);
- ``full_fixed``: the full-resolution image, the chip cut with the input photo's landmarks (no re-detection);
- ``128``: the image brought back to the 128 px crop with the edit's own alignment matrix, landmarks
  re-detected on that crop (the path the 128 px edit's own figure takes);
- ``128_fixed``: the same crop, the chip cut with the input's landmarks mapped into the crop.

The 128 px edit is read as ``128`` (bench_fullres's crop figure) and ``128_fixed``, resized 2x and 0.5x, and after
changes no one sees (``edit_noise1``, ``edit_jpeg95``, ``edit_shift0.5``); detail transfer's steps are read at crop
resolution (``stages``). ``--json`` holds the summary (per reading: accuracy, mean p(requested), p per label).

    python scripts/fullres_readings.py --raw /tmp/raw --split tune --source london --people 7 --cache /tmp/fr19 \
        --json /tmp/fr19/readings_tune_london.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fullres import LABELS, cached_edits, detail_settings, people, split_people  # noqa: E402

from mien.detail import transfer_detail  # noqa: E402
from mien.face import align  # noqa: E402
from mien.models.faceapi_expression import EXPRESSIONS  # noqa: E402
from mien.paste import paste_into_photo  # noqa: E402

assert LABELS == EXPRESSIONS  # read() returns face-api's probabilities in EXPRESSIONS order, indexed by LABELS


def read(analyzer, rgb: np.ndarray, landmarks: np.ndarray | None = None) -> list[float] | None:
    """face-api's 7 probabilities (mien.models.faceapi_expression.EXPRESSIONS order) on ``rgb``'s dlib chip, cut
    with ``landmarks`` or with the landmarks MediaPipe finds in ``rgb``; None when no face is found."""
    if landmarks is None:
        faces = analyzer.landmarker.detect(rgb, max_faces=1)
        if not faces:
            return None
        landmarks = faces[0].landmarks
    chip = align.dlib_chip(rgb, landmarks)
    small = np.asarray(Image.fromarray(chip).resize((112, 112), Image.BILINEAR))
    x = torch.from_numpy(small[None]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return [round(float(v), 5) for v in analyzer.expression.predict(x)[0]]


def readings(analyzer, name: str, img: np.ndarray, m: np.ndarray, lm: np.ndarray) -> dict:
    """``img`` (a full-resolution photo) read four ways: ``full``, ``full_fixed``, ``128``, ``128_fixed``."""
    crop = align.warp_to_crop(img, m)
    lm128 = align.apply_affine(m, lm[:, :2])
    return {f"{name}_full": read(analyzer, img), f"{name}_full_fixed": read(analyzer, img, lm),
            f"{name}_128": read(analyzer, crop), f"{name}_128_fixed": read(analyzer, crop, lm128)}  # fmt: skip


def crop_scale_transfer(p: dict, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detail transfer's face computed at crop resolution from its plan ``p`` (mien.detail.plan_for) and the 128 px
    edit ``crop``, without the photo's fine band: (the photo's crop moved by the flow, that plus the residual with
    the edit itself, its colour drift removed, where ``new``), float32. What the diagnostic scripts read in place of
    transfer_detail's full-resolution face."""
    from mien.detail import _remap_crop

    new = p["new"][..., None]
    warped = _remap_crop(p["original"].astype(np.float32), p["flow"])
    return warped, (warped + p["residual"]) * (1 - new) + (crop.astype(np.float32) - p["drift"]) * new


def stages(analyzer, photo, crop, m, lm, keep, settings) -> dict:
    """The 128 px readings of detail transfer's steps computed at crop resolution (plan_for), each inside the
    output's mask with the original crop outside: the edit (``edit_masked``); less its colour drift
    (``edit_nodrift``; ``edit_nodrift_whole``: without the mask); the original crop moved by the flow; plus the
    residual; plus the edit itself where ``new`` (the output at crop resolution, without the photo's fine band)."""
    from mien.detail import plan_for

    p = plan_for(photo, crop, m, keep, lm, settings)
    orig = p["original"]
    a = p["alpha"][..., None]
    edit = crop.astype(np.float32) - p["drift"]
    warped, final = crop_scale_transfer(p, crop)
    stage = {"edit_masked": crop.astype(np.float32), "edit_nodrift": edit, "stage_flow": warped,
             "stage_residual": warped + p["residual"], "stage_final": final}
    u8 = lambda x: np.clip(np.rint(orig * (1 - a) + x * a), 0, 255).astype(np.uint8)  # noqa: E731
    out = {k: read(analyzer, u8(v)) for k, v in stage.items()}
    out["edit_nodrift_whole"] = read(analyzer, np.clip(np.rint(edit), 0, 255).astype(np.uint8))
    return out


def perturbed(analyzer, crop: np.ndarray) -> dict:
    """The 128 px edit read after changes no one would see: Gaussian noise of 1 grey level (seed 0), JPEG quality
    95, a shift by half a pixel (bilinear): how far face-api's reading moves when the expression does not."""
    noisy = np.clip(crop + np.random.default_rng(0).normal(0, 1.0, crop.shape), 0, 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    jpeg = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    half = np.float64([[1, 0, 0.5], [0, 1, 0.5]])
    shifted = cv2.warpAffine(crop, half, (crop.shape[1], crop.shape[0]), borderMode=cv2.BORDER_REFLECT101)
    return {"edit_noise1": read(analyzer, noisy), "edit_jpeg95": read(analyzer, jpeg),
            "edit_shift0.5": read(analyzer, shifted)}  # fmt: skip


def evaluate(args, chosen) -> list[dict]:
    from mien.analysis import FaceAnalyzer

    rows = []
    with FaceAnalyzer() as analyzer:
        for person, label, d in cached_edits(args.cache, chosen, args.labels):
            photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
            row = {"person": person, "label": label, "edit_128": read(analyzer, crop),
                   "edit_128_fixed": read(analyzer, crop, align.apply_affine(m, lm[:, :2])),
                   "edit_x2": read(analyzer, cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)),
                   "edit_x0.5": read(analyzer, cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA))}  # fmt: skip
            row.update(perturbed(analyzer, crop))
            row.update(stages(analyzer, photo, crop, m, lm, keep, args.detail))
            row.update(readings(analyzer, "photo", photo, m, lm))
            row.update(readings(analyzer, "paste", paste_into_photo(photo, crop, m, keep), m, lm))
            row.update(readings(analyzer, "detail", transfer_detail(photo, crop, m, keep, lm, args.detail), m, lm))
            rows.append(row)
            print(person, label, file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> dict:
    """Per reading: accuracy (top label = request), mean p(requested), and p(requested) per label."""
    out = {}
    for key in [k for k in rows[0] if k not in ("person", "label")]:
        ok, p, per = [], [], {lab: [] for lab in LABELS}
        for r in rows:
            v = r.get(key)
            if v is None:
                continue
            i = LABELS.index(r["label"])
            ok.append(int(np.argmax(v)) == i)
            p.append(v[i])
            per[r["label"]].append(v[i])
        out[key] = {"acc": float(np.mean(ok)), "p": float(np.mean(p)), "n": len(p),
                    **{lab: round(float(np.mean(v)), 3) for lab, v in per.items() if v}}  # fmt: skip
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--people", type=int, default=3)
    ap.add_argument("--source", choices=("london", "essex"))
    ap.add_argument("--labels", nargs="+", default=list(LABELS))
    ap.add_argument("--cache", type=Path, required=True, help="bench_fullres.py's --cache (the edits)")
    ap.add_argument("--settings", default="{}", help="DetailSettings fields to change, as JSON")
    ap.add_argument("--json", type=Path, help="write the settings and summary here")
    ap.add_argument("--rows", action="store_true", help="--json with the per-image readings too")
    args = ap.parse_args()
    args.detail = detail_settings(args.settings)
    rows = evaluate(args, split_people(people(args.raw), args.split, args.people, args.source))
    summary = table(rows)
    if args.json:  # compact: with --rows, per image and reading p(requested) and the top label's index (LABELS)
        short = [{k: v if k in ("person", "label") or v is None else [round(v[LABELS.index(r["label"])], 3),
                                                                     int(np.argmax(v))]
                  for k, v in r.items()} for r in rows] if args.rows else []  # fmt: skip
        args.json.write_text(json.dumps({"settings": vars(args.detail), "split": args.split, "summary": summary})[:-1]
                             + ', "rows": [\n' + ",\n".join(json.dumps(r) for r in short) + "\n]}\n")
    for k, v in summary.items():
        print(f"{k:22s} " + " ".join(f"{a} {b:.3f}" if isinstance(b, float) else f"{a} {b}" for a, b in v.items()))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
