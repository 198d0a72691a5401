"""Ablations of detail transfer on bench_fullres.py's cached edits (docs/fullres.md, issue 19): per variant
(``DetailSettings`` fields as JSON), the sharpness ratio, the still-face colour shift (mean, and the share of images
within 2 grey levels), the still-region PSNR and face-api's expression on the full-resolution output, re-detected
(bench_fullres's ``detail_*`` figures, without the others, so that a grid of variants takes seconds), and the mean paired difference of p(requested) against the first variant with its 90 % interval from a
bootstrap over people (2,000 draws, seed 0). ``--unsharp`` adds variants of the first one whose changed pixels are
sharpened (positive amounts) or blurred (negative) by an unsharp mask of sigma 1 photo px: how face-api's reading
moves with sharpness alone.

    python scripts/fullres_ablate.py --raw /tmp/raw --split tune --source essex --people 5 --cache /tmp/fr19 \\
        default='{}' snap1='{"snap": 1.0}' --unsharp -0.3 --json docs/fullres/ablate_tune_essex.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fullres import (  # noqa: E402
    LABELS, detail_settings, edit_file, metrics, people, photo_mask, sharpness, split_people)
from fullres_paired import bootstrap_people  # noqa: E402

from mien.detail import FACE_OVAL, DetailSettings, transfer_detail  # noqa: E402


def unsharp(out: np.ndarray, photo: np.ndarray, amount: float) -> np.ndarray:
    """``out`` where it differs from ``photo``, sharpened by ``amount`` (an unsharp mask, sigma 1 px; < 0 blurs)."""
    f = out.astype(np.float32)
    sharp = np.clip(np.rint(f + amount * (f - cv2.GaussianBlur(f, (0, 0), 1.0))), 0, 255).astype(np.uint8)
    return np.where((out != photo).any(axis=2, keepdims=True), sharp, out)


def inner_face(landmarks: np.ndarray, shape) -> np.ndarray:
    """bench_fullres's sharpness region: the face oval eroded by 4 photo px."""
    face = photo_mask(landmarks[list(FACE_OVAL), :2], shape)
    return cv2.erode(face.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)


def evaluate(analyzer, items, settings: DetailSettings, amount: float = 0.0) -> list[dict]:
    rows = []
    for person, label, d in items:
        photo, lm = d["photo"], d["landmarks"]
        out = transfer_detail(photo, d["crop"], d["matrix"], str(d["keep"]), lm, settings)
        if amount:
            out = unsharp(out, photo, amount)
        row = {"person": person, "label": label, "sharpness": round(sharpness(photo, out, inner_face(lm, photo.shape)), 4), "p": 0.0,
               "ok": False}  # fmt: skip
        if not amount:
            m = metrics(photo, out, d["crop"], d["matrix"], lm)
            row.update({k: round(m[k], 4) for k in ("colour_shift", "psnr_still") if k in m})
        try:
            e = analyzer.analyze(out)[0].expression
            row.update(p=round(float(e[label]), 4), ok=max(e, key=e.get) == label)
        except Exception:  # noqa: BLE001 - a face not found again reads as no expression
            pass
        rows.append(row)
    return rows


def paired(base: list[dict], rows: list[dict], draws: int = 2000) -> tuple[float, list[float]]:
    diff: dict[str, list[float]] = {}
    for a, b in zip(base, rows):
        diff.setdefault(a["person"], []).append(b["p"] - a["p"])
    return float(np.mean([d for v in diff.values() for d in v])), bootstrap_people(diff, draws, 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=JSON of DetailSettings fields; the first is the reference")
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--source", choices=("london", "essex"))
    ap.add_argument("--cache", type=Path, required=True, help="bench_fullres.py's --cache (the edits)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="the edits of these seeds (bench --seeds)")
    ap.add_argument("--unsharp", type=float, nargs="*", default=[], help="amounts for the first variant, sharpened")
    ap.add_argument("--json", type=Path, help="one line per variant: its summary (and per-image p with --rows)")
    ap.add_argument("--rows", action="store_true")
    args = ap.parse_args()
    from mien.analysis import FaceAnalyzer

    chosen = split_people(people(args.raw), args.split, args.people, args.source)
    items = [(p, lab, np.load(edit_file(args.cache, p, lab, seed))) for seed in args.seeds for p, _ in chosen
             for lab in LABELS if edit_file(args.cache, p, lab, seed).exists()]  # fmt: skip
    named = [v.split("=", 1) for v in args.variants]
    runs = [(n, s, 0.0) for n, s in named] + [(f"{named[0][0]}+unsharp{a:g}", named[0][1], a) for a in args.unsharp]
    lines, base = [], None
    with FaceAnalyzer() as analyzer:
        for name, text, amount in runs:
            rows = evaluate(analyzer, items, detail_settings(text), amount)
            base = base or rows
            dp, interval = paired(base, rows)
            s = {"variant": name, "settings": json.loads(text), "unsharp": amount, "images": len(rows),
                 "sharpness": round(float(np.mean([r["sharpness"] for r in rows])), 4),
                 "sharpness_min": round(float(np.min([r["sharpness"] for r in rows])), 4),
                 "accuracy": round(float(np.mean([r["ok"] for r in rows])), 4),
                 "p": round(float(np.mean([r["p"] for r in rows])), 4), "dp": round(dp, 4),
                 "dp_interval90": interval}  # fmt: skip
            colour = [r["colour_shift"] for r in rows if "colour_shift" in r]
            if colour:
                s.update(colour_shift=round(float(np.mean(colour)), 4),
                         colour_within_2=round(float(np.mean(np.array(colour) <= 2.0)), 4),
                         psnr_still=round(float(np.mean([r["psnr_still"] for r in rows if "psnr_still" in r])), 4))
            print(json.dumps(s), flush=True)
            lines.append(json.dumps({**s, "rows": rows} if args.rows else s))
    if args.json:
        args.json.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
