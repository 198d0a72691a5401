"""Benchmark of the full-resolution paste (docs/fullres.md): the old paste (the 128 px crop warped back,
``--paste crop``) against detail transfer (``--paste detail``, :mod:`mien.detail`) on the dev people that
have their original photos (the ``*.raw.jpg`` of faces128 ``dev.tar``: London Set and Essex faces94),
the seven labels, seed 0 (``--seeds``: more seeds, each its own edit).

    tar xf shared/data/faces128/dev.tar -C /tmp/raw --wildcards '*raw.jpg'
    python scripts/bench_fullres.py --raw /tmp/raw --split tune   --people 4  --cache /tmp/fr   # choose parameters
    python scripts/bench_fullres.py --raw /tmp/raw --split report --people 12 --cache /tmp/fr --sheet /tmp/sheets
    flock notes/bench.lock python scripts/bench_fullres.py --raw /tmp/raw --cost    # 12 MP timing only
    python scripts/bench_fullres.py ... --cached-only --settings '{"structure": false}'  # another rule, same edits
    python scripts/bench_fullres.py --raw /tmp/raw --split report --people 99 --seeds 1 2 --cache /tmp/fr  # more edits

People are split by their index in key order: every fourth (0, 4, 8, ...) is a tuning person, the rest are
report people. Per image (the metrics are defined in docs/fullres.md): sharpness ratio, ghost ratio,
still-face colour shift, still-region PSNR, changed pixels outside the face mask, seam ratio, and face-api
expression / identity on the re-aligned output against the 128 px crop's own; the outputs are also read brought
back to the 128 px crop with the edit's own alignment (``*_at128_*``: the measurement path of the crop's own figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mien.detail import DEFAULT, FACE_OVAL, DetailSettings, crop_flow, transfer_detail
from mien.face import align
from mien.io.image import load_rgb
from mien.paste import paste_into_photo

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
# MediaPipe face-mesh brows and outer lip line (face_mesh_connections: LEFT/RIGHT_EYEBROW, LIPS outer)
FEATURES = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276,
            61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)  # fmt: skip
# still regions in crop coordinates (x0, y0, x1, y1): forehead above the brows, both cheeks
STILL_BOXES = ((44, 20, 84, 32), (26, 64, 40, 82), (88, 64, 102, 82))


def people(raw: Path) -> list[tuple[str, Path]]:
    """(person, identity photo) of every dev person with a raw photo: London's neutral, Essex's first shot."""
    found: dict[str, Path] = {}
    for p in sorted(raw.glob("*.raw.jpg")):
        key = p.name[: -len(".raw.jpg")]
        if key.startswith("london_"):
            if key.endswith("_neutral"):
                found[key.rsplit("_", 1)[0]] = p
        elif key.startswith("essex_"):
            person = key.rsplit("_", 1)[0]
            found.setdefault(person, p)
    return sorted(found.items())


def split_people(all_people, split: str, n: int, source: str | None = None):
    """The first ``n`` people of a split (of one source, if given); london_001 (the bundled example, on which
    the parameters were looked at) is a tuning person whatever its index."""
    chosen = [pp for i, pp in enumerate(all_people)
              if ((i % 4 == 0) or pp[0] == "london_001") == (split == "tune")]  # fmt: skip
    return [pp for pp in chosen if source is None or pp[0].startswith(source)][:n]


def edit_file(cache: Path, person: str, label: str, seed: int = 0) -> Path:
    """The cached 128 px edit of ``person`` and ``label`` from ``seed`` (seed 0 keeps the name it always had)."""
    return cache / (f"{person}_{label}.npz" if seed == 0 else f"{person}_{label}_seed{seed}.npz")


def cached_edits(cache: Path, chosen, labels=LABELS, seed: int = 0):
    """(person, label, the cached edit's arrays: photo, crop, matrix, landmarks, keep) of every person of ``chosen``
    (``split_people``) and label whose 128 px edit from ``seed`` is in ``cache`` (``--cache``; others are skipped)."""
    for person, *_ in chosen:
        for label in labels:
            f = edit_file(cache, person, label, seed)
            if f.exists():
                yield person, label, dict(np.load(f))


def source_split_arguments(ap) -> None:
    """--raw, --cache, --split and --people ESSEX LONDON: the cached edits of both sources' people of a split,
    for the scripts that look into where detail transfer's figures come from."""
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--people", nargs=2, type=int, default=(5, 7), metavar=("ESSEX", "LONDON"))


def grey(a):
    return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)


def lap_var(a, mask):
    return float(cv2.Laplacian(grey(a), cv2.CV_32F)[mask].var())


def grad(a):
    g = grey(a)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def photo_mask(poly, shape):
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1)
    return m.astype(bool)


def crop_box_mask(box, matrix, shape, extra=None):
    m = np.zeros((128, 128), np.float32)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    if extra is not None:
        m *= extra
    return cv2.warpAffine(m, matrix, (shape[1], shape[0]), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST) > 0.5


def psnr(a, b, mask):
    mse = float(((a.astype(np.float64) - b)[mask] ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def detail_settings(text: str) -> DetailSettings:
    """The default DetailSettings with the fields of ``text`` (JSON; lists become tuples) changed."""
    return DetailSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items()})


def sharpness(photo: np.ndarray, out: np.ndarray, inner: np.ndarray) -> float:
    """Laplacian variance of ``out`` over the photo's within ``inner`` (the eroded face oval of :func:`metrics`)."""
    return lap_var(out, inner) / max(lap_var(photo, inner), 1e-6)


def metrics(photo, out, crop, matrix, landmarks) -> dict:
    """The per-image figures of docs/fullres.md for one pasted photo ``out``."""
    oval = landmarks[list(FACE_OVAL), :2]
    face = photo_mask(oval, photo.shape)
    inner = cv2.erode(face.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    original = align.warp_to_crop(photo, matrix)
    flow = crop_flow(original, crop)
    still_crop = (np.linalg.norm(flow, axis=2) == 0).astype(np.float32)
    still = cv2.warpAffine(still_crop, matrix, (photo.shape[1], photo.shape[0]),
                           flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST) > 0.5  # fmt: skip
    r = {"sharpness": sharpness(photo, out, inner)}
    # ghosts: edge energy left at the source positions of brow / lip points the edit moved by >= 2 crop px
    pts = align.apply_affine(matrix, landmarks[list(FEATURES), :2])  # their crop positions (the source)
    moved = []
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < 128 and 0 <= yi < 128:
            # the feature now at x' came from x' + flow(x'); its source x is where some x' points: approximate the
            # motion at the source by the flow found there
            if np.linalg.norm(flow[yi, xi]) >= 2.0:
                moved.append((x, y))
    if moved:
        src = align.apply_affine(align.invert_affine(matrix), np.array(moved))
        rad = max(2, int(round(1.0 / align.affine_scale(matrix))))
        g_in, g_out = grad(photo), grad(out)
        e_in = e_out = 0.0
        for x, y in src:
            xi, yi = int(round(x)), int(round(y))
            win = (slice(max(yi - rad, 0), yi + rad + 1), slice(max(xi - rad, 0), xi + rad + 1))
            e_in += float(g_in[win].mean())
            e_out += float(g_out[win].mean())
        r["ghost"] = e_out / max(e_in, 1e-6)
        r["moved_points"] = len(moved)
    sf = inner & still
    if sf.sum() > 100:
        r["colour_shift"] = float(np.abs(out[sf].mean(axis=0) - photo[sf].astype(np.float64).mean(axis=0)).max())
    sr = np.zeros(photo.shape[:2], bool)
    for b in STILL_BOXES:
        sr |= crop_box_mask(b, matrix, photo.shape, still_crop)
    if sr.sum() > 50:
        r["psnr_still"] = psnr(out, photo, sr)
    # outside the face: the oval's bounding box grown by a quarter of its width (tests/test_editor.py)
    (x0, y0), (x1, y1) = oval.min(axis=0), oval.max(axis=0)
    pad = 0.25 * (x1 - x0)
    outside = np.ones(photo.shape[:2], bool)
    outside[max(int(y0 - pad), 0):int(y1 + pad), max(int(x0 - pad), 0):int(x1 + pad)] = False
    r["changed_outside"] = int((out[outside] != photo[outside]).any(axis=1).sum())
    # seam: gradient in a ring on the mask edge (the oval grown by margin + half the feather), output / input
    s = 1.0 / align.affine_scale(matrix)
    grow = int(round((DEFAULT.jaw_margin + DEFAULT.feather / 2) * s))
    width = max(2, int(round(DEFAULT.feather * s / 2)))
    k = lambda n: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * n + 1, 2 * n + 1))
    f8 = face.astype(np.uint8)
    edge = cv2.dilate(f8, k(grow))
    ring = (cv2.dilate(edge, k(width)) > 0) & ~(cv2.erode(edge, k(width)) > 0)
    d_out, d_in = np.abs(np.diff(grey(out), axis=1)), np.abs(np.diff(grey(photo), axis=1))
    rr = ring[:, 1:]
    r["seam"] = float(d_out[rr].mean() / max(d_in[rr].mean(), 1e-6))
    return r


def generate(args, chosen):
    """The 128 px edits of every chosen person and label, cached in --cache (photo, crop, matrix, landmarks)."""
    from mien.edit import Editor
    from mien.expression.targets import parse_request
    from mien.settings import GenerationSettings

    args.cache.mkdir(parents=True, exist_ok=True)
    todo = [(p, path, lab, seed) for seed in args.seeds for p, path in chosen for lab in args.labels
            if not edit_file(args.cache, p, lab, seed).exists()]  # fmt: skip
    if not todo:
        return
    with Editor.from_pretrained() as editor:
        for person, path, label, seed in todo:
            photo = load_rgb(path)
            aligned = editor.align([photo])
            subject = editor.subject([photo], aligned)
            res = editor.edit(subject, parse_request(label), GenerationSettings(**json.loads(args.generation)), n=1,
                              seed=seed, paste=False)
            np.savez(edit_file(args.cache, person, label, seed), photo=photo, crop=res.crops[0], matrix=subject.matrix,
                     landmarks=subject.landmarks, keep=res.generation.settings.keep)  # fmt: skip
            print(f"generated {person} {label} seed {seed}", file=sys.stderr, flush=True)


def reconstructions(settings: DetailSettings):
    """photo, matrix -> the decoder's reconstruction of the photo's 128 px crop (decode(encode(crop)) with the
    built-in model's TAEF2, as :meth:`mien.pipeline.MienPipeline.reconstruction` gives the editor), or None
    where ``settings.reference`` does not use it."""
    if settings.reference == "photo":
        return lambda photo, matrix: None
    import torch

    from mien.builtin.model import MienModel
    from mien.models.taef2 import TAEF2
    from mien.pipeline import default_model_dir

    taef2 = TAEF2.from_weights(decoder_path=MienModel.from_pretrained(default_model_dir()).decoder_path).eval()

    def decoded(photo, matrix):
        x = torch.from_numpy(align.warp_to_crop(photo, matrix)).permute(2, 0, 1).float()[None]
        with torch.no_grad():
            rgb = taef2.decode(taef2.encode(x / 255)).clamp(0, 1)
        return (rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return decoded


def evaluate(args, chosen) -> list[dict]:
    from mien.analysis import FaceAnalyzer

    rows = []
    reconstruction = reconstructions(args.detail)
    with FaceAnalyzer() as analyzer:
        for seed, person, label in [(s, p, lab) for s in args.seeds for p, _ in chosen for lab in args.labels]:
            f = edit_file(args.cache, person, label, seed)
            if args.cached_only and not f.exists():
                continue
            d = np.load(f)
            photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
            ident = analyzer.analyze(photo)[0].faceapi
            row = {"person": person, "label": label, "seed": seed}
            outs = {"crop": paste_into_photo(photo, crop, m, keep),
                    "detail": transfer_detail(photo, crop, m, keep, lm, args.detail, reconstruction(photo, m))}
            at128 = {f"{name}_at128": align.warp_to_crop(img, m) for name, img in outs.items()}
            for name, img in [("crop128", crop), *outs.items(), *at128.items()]:
                try:
                    a = analyzer.analyze(img)[0]
                    row[f"{name}_expression_ok"] = max(a.expression, key=a.expression.get) == label
                    row[f"{name}_expression_p"] = float(a.expression[label])  # graded: for tuning on few images
                    row[f"{name}_same_person"] = float(np.linalg.norm(a.faceapi - ident)) < 0.6
                except Exception as e:  # noqa: BLE001 - a face not found again is a result, not a crash
                    row[f"{name}_error"] = str(e)
            for name, img in outs.items():
                row.update({f"{name}_{k}": v for k, v in metrics(photo, img, crop, m, lm).items()})
                if args.sheet:
                    cv2.imwrite(str(f.with_name(f"{f.stem}_{name}.png")), img[..., ::-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def contact_sheets(args, rows: list[dict]) -> list[Path]:
    """Face crops at 100 % zoom, input | old paste (crop) | detail transfer, for the typical image (median
    sharpness of detail transfer) and the worst (lowest sharpness, largest still-face colour shift, highest
    ghost ratio), written into --sheet."""
    from PIL import Image

    from mien.io.grid import grid

    picks = {}
    ranked = sorted(rows, key=lambda r: r["detail_sharpness"])
    picks["typical"] = ranked[len(ranked) // 2]
    picks["worst-sharpness"] = ranked[0]
    picks["worst-colour"] = max(rows, key=lambda r: r.get("detail_colour_shift", 0))
    picks["worst-ghost"] = max(rows, key=lambda r: r.get("detail_ghost", 0))
    args.sheet.mkdir(parents=True, exist_ok=True)
    written = []
    for name, r in picks.items():
        f = edit_file(args.cache, r["person"], r["label"], r.get("seed", 0))
        d = np.load(f)
        lm = d["landmarks"][:, :2]
        (x0, y0), (x1, y1) = lm.min(axis=0), lm.max(axis=0)
        pad = 0.12 * (x1 - x0)
        box = (int(max(x0 - pad, 0)), int(max(y0 - pad, 0)), int(x1 + pad), int(y1 + pad))
        tiles = [Image.fromarray(d["photo"]).crop(box)]
        tiles += [Image.open(f.with_name(f"{f.stem}_{k}.png")).crop(box) for k in ("crop", "detail")]
        title = (f"{r['person']} {r['label']}: input | crop paste | detail transfer (sharpness "
                 f"{r['crop_sharpness']:.2f} / {r['detail_sharpness']:.2f})")
        path = args.sheet / f"{name}_{r['person']}_{r['label']}.png"
        grid([tiles], title=title).save(path)
        written.append(path)
    return written


def summary(rows: list[dict]) -> dict:
    out = {}
    keys = sorted({k for r in rows for k in r if k not in ("person", "label", "seed") and not k.endswith("_error")})
    for k in keys:
        v = [float(r[k]) for r in rows if k in r]
        out[k] = {"mean": float(np.mean(v)), "median": float(np.median(v)), "min": float(np.min(v)),
                  "max": float(np.max(v)), "n": len(v)}  # fmt: skip
    return out


def cost(args) -> dict:
    """Seconds (wall clock, and CPU time, which load from other processes does not inflate) of the
    full-resolution step (transfer_detail with --settings, what paste_detail runs) for a 12 MP photo: a
    London photo upscaled to 4000 x 3000, median of 5 runs after one warm-up, one thread."""
    from mien.face.landmarker import FaceLandmarker

    cv2.setNumThreads(1)
    path = sorted(args.raw.glob("london_*_neutral.raw.jpg"))[0]
    small = load_rgb(path)
    s = 3000 / small.shape[0]
    pad = max(0, 4000 - int(round(small.shape[1] * s)))
    photo = cv2.resize(small, (4000 - pad, 3000), interpolation=cv2.INTER_CUBIC)
    photo = cv2.copyMakeBorder(photo, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REFLECT101)
    with FaceLandmarker() as lm:
        face = lm.detect(photo)[0]
    m = align.alignment_matrix(align.five_points(face.landmarks))
    crop = align.warp_to_crop(photo, m)
    crop = np.roll(crop, 2, axis=0)  # an edit with motion everywhere: the flow and every resampling run
    times, cpu = [], []
    for i in range(6):
        t, c = time.perf_counter(), time.process_time()
        transfer_detail(photo, crop, m, "background", face.landmarks, args.detail)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"photo": f"{photo.shape[1]}x{photo.shape[0]}", "face_px": round(float(face.box[2] - face.box[0])),
            "seconds_median": float(np.median(times[1:])), "seconds_all": times[1:],
            "cpu_seconds_median": float(np.median(cpu[1:])), "cpu_seconds_all": cpu[1:],
            "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count()}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True, help="folder with the dev split's *.raw.jpg")
    ap.add_argument("--split", choices=("tune", "report"), default="report")
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--source", choices=("london", "essex"), help="only this source's people")
    ap.add_argument("--labels", nargs="+", default=list(LABELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="seeds of the edits (each person and label once per seed; seed 0's cache names are unchanged)")
    ap.add_argument("--cache", type=Path, default=Path("fullres-cache"))
    ap.add_argument("--sheet", type=Path, help="write every pasted photo into --cache and contact sheets here")
    ap.add_argument("--cost", action="store_true", help="only time the full-resolution step on a 12 MP photo")
    ap.add_argument("--json", type=Path, help="write the rows and summary here")
    ap.add_argument("--cached-only", action="store_true",
                    help="generate nothing: evaluate only the chosen people's edits already in --cache")
    ap.add_argument("--settings", default="{}", help="DetailSettings fields to change, as JSON (tuning)")
    ap.add_argument("--generation", default="{}", help="GenerationSettings fields of the edits generated into --cache, "
                    "as JSON (e.g. '{\"colour_hold\": 1.0}'; the edits already there are not generated again)")
    ap.add_argument("--summary-only", action="store_true", help="--json without the per-image rows (smaller)")
    args = ap.parse_args()
    args.detail = detail_settings(args.settings)
    if args.cost:
        print(json.dumps(cost(args), indent=1))
        return
    chosen = split_people(people(args.raw), args.split, args.people, args.source)
    if not args.cached_only:
        generate(args, chosen)
    rows = evaluate(args, chosen)
    result = {"settings": vars(args.detail), "generation": json.loads(args.generation), "split": args.split,
              "people": [p for p, _ in chosen], "labels": args.labels, "seeds": args.seeds, "images": len(rows),
              "date": time.strftime("%Y-%m-%d"), "summary": summary(rows), "rows": rows}  # fmt: skip
    if args.sheet:
        for p in contact_sheets(args, rows):
            print(p, file=sys.stderr)
    if args.json:
        # compact: one line for the settings, summary and each row, figures to 4 decimals (--summary-only: no rows)
        head = {k: v for k, v in result.items() if k != "rows"}
        kept = [] if args.summary_only else [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                             for r in rows]  # fmt: skip
        args.json.write_text("{" + json.dumps(head)[1:-1] + ', "rows": [\n'
                             + ",\n".join(json.dumps(r) for r in kept) + "\n]}\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
