"""Watermark benchmark (docs/provenance.md): detection after JPEG 75 / half-size / 10 % crop, false
positives on unmarked photos, PSNR, and the cost on a 12-megapixel photo.

Carriers are real faces from ../shared/data/faces128 (never written to the repository):
- tuning (the threshold): unmarked crops of train-004.tar;
- report, marked: the first 150 dev crops and the first 150 dev raw photos (<= 512 px), each marked;
- report, unmarked: 1,000 dev images not marked (every raw photo, then crops), as they are.

    OMP_NUM_THREADS=1 python scripts/bench_watermark.py --out docs/provenance/bench_watermark.json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from mien import watermark

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces128"


def read_tar(path: Path, suffix: str, limit: int) -> list[tuple[str, np.ndarray]]:
    out = []
    with tarfile.open(path) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if m.name.endswith(suffix) and (suffix != ".webp" or not m.name.endswith(".raw.webp")):
                with Image.open(io.BytesIO(tar.extractfile(m).read())) as im:
                    out.append((m.name, np.asarray(im.convert("RGB"))))
                if len(out) >= limit:
                    break
    return out


def jpeg(a: np.ndarray, q: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def half(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2), Image.BICUBIC))


def crop(a: np.ndarray, rng: np.random.Generator, keep: float = 0.9) -> np.ndarray:
    """A 10 % crop: 90 % of each side kept, at a random position."""
    h, w = a.shape[:2]
    ch, cw = round(h * keep), round(w * keep)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return a[y:y + ch, x:x + cw]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--marked", type=int, default=150, help="crops and photos each (default 150 + 150)")
    ap.add_argument("--unmarked", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000, help="train crops for the threshold")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tune = read_tar(DATA / "train-004.tar", ".webp", args.tune)
    tune_scores = np.array([watermark.detect(a).score for _, a in tune])
    crops = read_tar(DATA / "dev.tar", ".webp", 10_000)
    photos = read_tar(DATA / "dev.tar", ".raw.jpg", 10_000)
    attacks = {"none": lambda a: a, "jpeg75": jpeg, "half": half, "crop10": lambda a: crop(a, rng),
               "crop10+half+jpeg75": lambda a: jpeg(half(crop(a, rng)))}
    res: dict = {}
    for kind, items in (("crop128", crops[:args.marked]), ("photo", photos[:args.marked])):
        scores = {k: [] for k in attacks}
        psnr = []
        for _, a in items:
            m = watermark.embed(a)
            psnr.append(10 * np.log10(255**2 / max(np.mean((m.astype(np.float64) - a) ** 2), 1e-12)))
            for k, f in attacks.items():
                scores[k].append(watermark.detect(f(m)).score)
        res[kind] = {"n": len(items), "psnr_mean": round(float(np.mean(psnr)), 2), "psnr_min": round(float(np.min(psnr)), 2),
                     "detected": {k: round(float(np.mean(np.array(v) > watermark.THRESHOLD)), 4) for k, v in scores.items()},
                     "score_p1": {k: round(float(np.percentile(v, 1)), 2) for k, v in scores.items()}}
        print(kind, json.dumps(res[kind]), flush=True)
    unmarked = (photos + crops)[:args.unmarked]
    null = np.array([watermark.detect(a).score for _, a in unmarked])
    null_jpeg = np.array([watermark.detect(jpeg(half(a))).score for _, a in unmarked])
    res["unmarked"] = {"n": len(unmarked), "photos": min(len(photos), args.unmarked),
                       "false_positives": int((null > watermark.THRESHOLD).sum()),
                       "false_positives_after_half_jpeg75": int((null_jpeg > watermark.THRESHOLD).sum()),
                       "score_max": round(float(null.max()), 2), "score_p99": round(float(np.percentile(null, 99)), 2)}
    res["tuning"] = {"n": len(tune), "score_max": round(float(tune_scores.max()), 2),
                     "score_p99.9": round(float(np.percentile(tune_scores, 99.9)), 2), "threshold": watermark.THRESHOLD}
    print("unmarked", json.dumps(res["unmarked"]), "tuning", json.dumps(res["tuning"]), flush=True)
    big = np.asarray(Image.fromarray(photos[0][1]).resize((4000, 3000), Image.BICUBIC))  # 12 MP
    t_embed, t_detect = [], []
    for _ in range(3):
        t = time.perf_counter(); m = watermark.embed(big); t_embed.append(time.perf_counter() - t)  # noqa: E702
        t = time.perf_counter(); d = watermark.detect(m); t_detect.append(time.perf_counter() - t)  # noqa: E702
    res["cost_12mp_s"] = {"embed": round(min(t_embed), 3), "detect": round(min(t_detect), 3), "found": d.found}
    res["run"] = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": platform.processor() or platform.machine(),
                  "load_average": [round(x, 2) for x in __import__("os").getloadavg()],
                  "strength": watermark.STRENGTH, "band": watermark.BAND}
    print(json.dumps(res["cost_12mp_s"]), json.dumps(res["run"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
