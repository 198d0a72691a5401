"""Where the full-resolution output loses face-api's reading of the edit (docs/fullres.md, "where Essex's reading
goes"): on bench_fullres.py's cached edits (several seeds), each output read after each step from the 128 px edit to
the full-resolution photo, landmarks re-detected on each image unless named ``*_lmE`` (the landmarks found on the
edit itself, mapped into the image: the same chip alignment as the edit's reading).

- ``edit``: the 128 px edit; ``mask``: the edit inside the output's mask (``crop_plan``'s alpha), the photo's crop
  outside; ``mask_edit_oval``: that mask united with the same mask built from the face oval found on the edit (a jaw
  or brow the edit moved past the photo's oval); ``mask_no_keep``: without the kept region's limit; ``mask_no_drift``:
  the edit less its colour drift inside the mask;
- ``transfer128``: detail transfer computed at crop resolution (the photo's crop moved by the flow, the residual, the
  edit itself where ``new``), inside the mask; ``output128``: the full-resolution output brought back to the crop
  with the edit's alignment; ``output``: the full-resolution output (what bench_fullres.py reports);
- ``output_vert``: the output's changed pixels filtered vertically by [1, 2, 1] / 4 (the interlaced video photos'
  comb); ``output_blur``: by a Gaussian of 0.6 photo px (about the same loss of Laplacian energy); ``output_window``:
  the photo outside the 128 px crop's window black (what the crop's own chip shows there). With their sharpness ratio.

    python scripts/fullres_steps.py --raw /tmp/sk/raw --split tune --source essex --seeds 0 1 --cache /tmp/surv/cache \\
        --json /tmp/steps_tune_essex.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fullres import LABELS, detail_settings, edit_file, people, sharpness, split_people  # noqa: E402
from fullres_ablate import inner_face  # noqa: E402
from fullres_readings import crop_scale_transfer, read  # noqa: E402

from mien.detail import FACE_OVAL, crop_plan, face_oval, plan_for, transfer_detail  # noqa: E402
from mien.face import align  # noqa: E402
from mien.paste import editable_region  # noqa: E402


def u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def images(d: dict, lm_edit: np.ndarray, settings) -> tuple[dict, dict]:
    """The crop-scale and full-resolution images of one cached edit ``d`` (module docstring), by reading name."""
    photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
    p = plan_for(photo, crop, m, keep, lm, settings)
    orig, edit, a = p["original"].astype(np.float32), crop.astype(np.float32), p["alpha"][..., None]
    over = lambda x, w=a: u8(orig + w * (x - orig))  # noqa: E731
    own = crop_plan(p["original"], crop, lm_edit[list(FACE_OVAL), :2], editable_region(keep, 128), settings)["alpha"]
    free = crop_plan(p["original"], crop, face_oval(lm, m), None, settings)["alpha"]
    transfer = crop_scale_transfer(p, crop)[1]
    out = transfer_detail(photo, crop, m, keep, lm, settings)
    small = {"edit": crop, "mask": over(edit), "mask_edit_oval": over(edit, np.maximum(a, own[..., None])),
             "mask_no_keep": over(edit, free[..., None]), "mask_no_drift": over(edit - p["drift"]),
             "transfer128": over(transfer), "output128": align.warp_to_crop(out, m)}  # fmt: skip
    f, changed = out.astype(np.float32), (out != photo).any(axis=2, keepdims=True)
    vert = cv2.filter2D(f, -1, np.array([[0.25], [0.5], [0.25]], np.float32), borderType=cv2.BORDER_REFLECT)
    window = cv2.warpAffine(np.ones((128, 128), np.float32), m, photo.shape[1::-1],
                            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)[..., None] > 0.5  # fmt: skip
    full = {"output": out, "output_vert": np.where(changed, u8(vert), out),
            "output_blur": np.where(changed, u8(cv2.GaussianBlur(f, (0, 0), 0.6)), out),
            "output_window": np.where(window, out, 0).astype(np.uint8)}  # fmt: skip
    return small, full


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--people", type=int, default=99)
    ap.add_argument("--source", choices=("london", "essex"), default="essex")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--cache", type=Path, required=True, help="bench_fullres.py's --cache (the edits)")
    ap.add_argument("--settings", default="{}", help="DetailSettings fields, as JSON")
    ap.add_argument("--json", type=Path, help="the summary (per reading: accuracy, mean p(requested), sharpness)")
    args = ap.parse_args()
    from mien.analysis import FaceAnalyzer

    settings = detail_settings(args.settings)
    ok: dict[str, list[bool]] = {}
    p: dict[str, list[float]] = {}
    sharp: dict[str, list[float]] = {}
    with FaceAnalyzer() as analyzer:
        chosen = split_people(people(args.raw), args.split, args.people, args.source)
        for seed, (person, _), label in [(s, pp, lab) for s in args.seeds for pp in chosen for lab in LABELS]:
            f = edit_file(args.cache, person, label, seed)
            if not f.exists():
                continue
            d, i = dict(np.load(f)), LABELS.index(label)
            found = analyzer.landmarker.detect(d["crop"], max_faces=1)
            if not found:
                continue
            lm_edit = found[0].landmarks
            lm_photo = align.apply_affine(align.invert_affine(d["matrix"]), lm_edit[:, :2])
            small, full = images(d, lm_edit, settings)
            reads = [(k, img, None) for k, img in {**small, **full}.items()]
            reads += [(f"{k}_lmE", small[k], lm_edit) for k in ("mask", "transfer128", "output128")]
            reads += [("output_lmE", full["output"], lm_photo)]
            for name, img, lm in reads:
                v = read(analyzer, img, lm)
                ok.setdefault(name, []).append(v is not None and int(np.argmax(v)) == i)
                p.setdefault(name, []).append(0.0 if v is None else v[i])
            inner = inner_face(d["landmarks"], d["photo"].shape)
            for name, img in full.items():
                sharp.setdefault(name, []).append(sharpness(d["photo"], img, inner))
            print(person, label, seed, file=sys.stderr, flush=True)
    summary = {k: {"acc": round(float(np.mean(ok[k])), 4), "p": round(float(np.mean(p[k])), 4), "n": len(p[k]),
                   **({"sharpness": round(float(np.mean(sharp[k])), 3)} if k in sharp else {})}
               for k in p}  # fmt: skip
    if args.json:
        head = {"settings": json.loads(args.settings), "split": args.split, "source": args.source, "seeds": args.seeds}
        args.json.write_text(json.dumps({**head, "summary": summary}, separators=(",", ":")) + "\n")
    for k, v in summary.items():
        extra = f"  sharpness {v['sharpness']:.3f}" if "sharpness" in v else ""
        print(f"{k:18s} accuracy {v['acc']:.3f}  p {v['p']:.4f}  n {v['n']}{extra}")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
