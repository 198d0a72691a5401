"""Check that mien's alignment reproduces the faces128 pool on every dev photo that ships its source.

For each ``<key>.raw.jpg`` in ``dev.tar`` (the source photo, downscaled to <= 512 px) this runs the
full pipeline (MediaPipe landmarks -> five points -> similarity -> warp) and compares the crop with
the shipped ``<key>.webp`` over the crop's valid region (README: ``fill`` pixels are mirrored, not
real). It also reports two floors that say how much of the error is not alignment:

* ``warp-only``: the same comparison, but warping with the manifest's own ``affine`` (rescaled to the
  raw photo), so only the raw photo's downscaling / re-encoding and the WebP q90 coding differ;
* ``webp q90``: how much WebP q90 coding alone changes our crop (encode, decode, compare).

``shift`` is the mean displacement, in crop pixels, between where our crop and the pool's crop
sample the photo (0 = identical geometry). Run from the repository root:

    python scripts/bench_alignment.py            # all dev photos with a raw.jpg
    python scripts/bench_alignment.py --limit 40 --fail-above 8
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mien.face import align
from mien.face.landmarker import FaceLandmarker

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces128"


def load_dev(data: Path) -> tuple[dict[str, dict], dict[str, bytes]]:
    rows = {}
    with open(data / "manifest.jsonl") as f:
        for line in f:
            if '"dev"' in line:
                r = json.loads(line)
                rows[r["key"]] = r
    with tarfile.open(data / "dev.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return rows, files


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def raw_affine(row: dict, raw_shape: tuple[int, ...]) -> np.ndarray:
    """The manifest affine (source-photo pixels -> crop) re-expressed for the downscaled raw.jpg."""
    m = np.array(row["affine"], dtype=np.float64)
    sw, sh = row["src_size"]
    m[:, 0] *= sw / raw_shape[1]
    m[:, 1] *= sh / raw_shape[0]
    return m


def crop_shift(m_ours: np.ndarray, m_pool: np.ndarray, size: int = 128) -> float:
    """Mean distance (crop px) between where the two matrices send each crop pixel's source point."""
    q = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2).astype(np.float64)
    back = align.apply_affine(align.invert_affine(m_ours), q)
    return float(np.linalg.norm(align.apply_affine(m_pool, back) - q, axis=1).mean())


def webp_floor(crop: np.ndarray, mask: np.ndarray) -> float:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="WEBP", quality=90)
    return float(np.abs(decode(buf.getvalue()).astype(np.int16) - crop)[mask].mean())


def check_one(lm: FaceLandmarker, row: dict, raw: np.ndarray, shipped: np.ndarray) -> dict:
    mask = align.validity_mask(row["affine"], row["src_size"])
    t0 = time.perf_counter()
    faces = lm.detect(raw)
    if not faces:
        return {"key": row["key"], "failure": "no face"}
    crop, m = align.align_face(raw, align.five_points(faces[0].landmarks))
    dt = time.perf_counter() - t0
    m_pool = raw_affine(row, raw.shape)
    warp_only = align.warp_to_crop(raw, m_pool)
    err = lambda a: float(np.abs(a.astype(np.int16) - shipped)[mask].mean())  # noqa: E731
    return {
        "key": row["key"],
        "source": row["source"],
        "error": err(crop),
        "warp_only": err(warp_only),
        "webp_q90": webp_floor(warp_only, mask),
        "shift": crop_shift(m, m_pool),
        "faces": len(faces),
        "seconds": dt,
    }


def summary(name: str, v: np.ndarray) -> str:
    p95 = np.percentile(v, 95)
    return f"{name:10s} mean {v.mean():6.3f}  median {np.median(v):6.3f}  p95 {p95:6.3f}  max {v.max():6.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="faces128 folder (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="check only this many photos, evenly spread (0: all)")
    ap.add_argument("--fail-above", type=float, default=10.0, help="count a photo as failed above this error")
    ap.add_argument("--json", type=Path, help="also write per-photo results here")
    args = ap.parse_args(argv)

    rows, files = load_dev(args.data)
    keys = sorted(k for k in rows if f"{k}.raw.jpg" in files)
    if args.limit:
        keys = keys[:: max(1, len(keys) // args.limit)][: args.limit]
    results = []
    with FaceLandmarker(num_faces=2) as lm:
        for k in tqdm(keys, desc="realigning", unit="photo"):
            raw, shipped = decode(files[f"{k}.raw.jpg"]), decode(files[f"{k}.webp"])
            results.append(check_one(lm, rows[k], raw, shipped))
    ok = [r for r in results if "error" in r]
    failed = [r for r in results if "error" not in r or r["error"] > args.fail_above]
    print(f"{len(keys)} dev photos with raw.jpg; {len(ok)} aligned; mean abs pixel error (0-255) over the valid mask:")
    for src in sorted({r["source"] for r in ok}) + [None]:
        sel = [r for r in ok if src is None or r["source"] == src]
        print(f"-- {src or 'all'} ({len(sel)})")
        for field in ("error", "warp_only", "webp_q90", "shift"):
            print("   " + summary(field, np.array([r[field] for r in sel])))
    secs = np.array([r["seconds"] for r in ok])
    ms = secs * 1000
    print(f"time per photo (landmarks + align): mean {ms.mean():.1f} ms, median {np.median(ms):.1f} ms")
    print(f"failures (no face or error > {args.fail_above}): {len(failed)}")
    for r in failed:
        print("   ", r["key"], r.get("failure") or f"error {r['error']:.2f}, shift {r['shift']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
