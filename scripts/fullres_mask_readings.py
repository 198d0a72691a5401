"""What detail transfer's face mask costs face-api's expression reading (docs/fullres.md, issue 19): on the edits
``scripts/bench_fullres.py`` cached, the 128 px edit composited over the original crop through different masks, each
read as the crop's own figure is (landmarks re-detected on the 128 px image, face-api's 150 px dlib chip).

Readings (face-api's mean p(requested) and accuracy over the images):

- ``edit``: the edit itself; ``photo``: the original crop;
- ``mask``: the edit inside the output's mask (``crop_plan``'s alpha with ``--settings``), the original outside;
- ``no_feather`` / ``grown8``: that mask without the feather / with the oval grown by 8 crop px (``jaw_margin``);
- ``no_keep``: the mask without the kept region's limit (the face oval united with it moved by the flow, feathered);
  ``no_keep_top`` / ``_sides`` / ``_bottom``: only the part of that difference above crop row 44, between rows 44
  and 104, below row 104 (forehead; cheeks; chin), the rest as ``mask``; ``no_keep_low``: the difference taken
  from the edit's low band only (its residual against the original crop, low-passed by ``residual_sigma``, colour
  drift removed): shading, not the decoder's blur; ``no_keep_nodrift``: ``no_keep`` with the colour drift removed;
- ``edit_oval``: the edit inside its own face oval (landmarks re-detected on the edit), unfeathered, nothing kept;
  ``union_edit_oval``: the output's mask united with the same mask built from the edit's own oval (kept region's
  limit and feather as for the photo's): a jaw or chin the edit moved where the flow did not follow;
- each ``--variants`` NAME=JSON: the mask of those DetailSettings fields.

    python scripts/fullres_mask_readings.py --raw /tmp/raw --split report --source essex --people 10 \\
        --cache /tmp/fr19 --variants 'keep_after_feather={"keep_after_feather": true}' --json /tmp/mask_readings.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fullres import LABELS, cached_edits, detail_settings, people, split_people  # noqa: E402
from fullres_readings import read  # noqa: E402

from mien.detail import FACE_OVAL, _blur, _polygon_mask, crop_plan, face_oval, plan_for  # noqa: E402
from mien.paste import editable_region  # noqa: E402

# crop rows splitting the kept region's soft edge into the forehead (above), the cheeks and the chin (below)
TOP, BOTTOM = 44, 104


def composite(original: np.ndarray, content: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``content`` over ``original`` by ``weight`` (128, 128), rounded to uint8."""
    return np.clip(np.rint(original + weight[..., None] * (content - original)), 0, 255).astype(np.uint8)


def masks(analyzer, d, settings, variants) -> dict[str, np.ndarray]:
    """The uint8 composites of one cached edit ``d`` (module docstring), by reading name."""
    photo, crop, m, lm, keep = d["photo"], d["crop"], d["matrix"], d["landmarks"], str(d["keep"])
    p = plan_for(photo, crop, m, keep, lm, settings)
    orig, edit, alpha = p["original"].astype(np.float32), crop.astype(np.float32), p["alpha"]
    free = crop_plan(p["original"], crop, face_oval(lm, m), None, settings)["alpha"]  # nothing kept
    extra = np.clip(free - alpha, 0.0, 1.0)
    rows = np.arange(128)[:, None] * np.ones((1, 128))
    changed = lambda **kw: plan_for(photo, crop, m, keep, lm, dataclasses.replace(settings, **kw))["alpha"]  # noqa: E731
    out = {"edit": crop, "photo": p["original"], "mask": composite(orig, edit, alpha),
           "no_feather": composite(orig, edit, changed(feather=0.0)),
           "grown8": composite(orig, edit, changed(jaw_margin=8.0)), "no_keep": composite(orig, edit, free)}  # fmt: skip
    for name, part in (("top", rows < TOP), ("sides", (rows >= TOP) & (rows < BOTTOM)), ("bottom", rows >= BOTTOM)):
        out[f"no_keep_{name}"] = composite(orig, edit, alpha + extra * part)
    low = orig + _blur(edit - orig, settings.residual_sigma) - p["drift"]
    out["no_keep_low"] = np.clip(np.rint(orig + alpha[..., None] * (edit - orig) + extra[..., None] * (low - orig)),
                                 0, 255).astype(np.uint8)  # fmt: skip
    out["no_keep_nodrift"] = composite(orig, edit - p["drift"], free)
    faces = analyzer.landmarker.detect(crop, max_faces=1)
    if faces:
        oval = faces[0].landmarks[list(FACE_OVAL), :2]
        out["edit_oval"] = composite(orig, edit, _polygon_mask(oval, 128))
        own = crop_plan(p["original"], crop, oval, editable_region(keep, 128), settings)["alpha"]
        out["union_edit_oval"] = composite(orig, edit, np.maximum(alpha, own))
    for name, s in variants.items():
        out[name] = composite(orig, edit, plan_for(photo, crop, m, keep, lm, s)["alpha"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--source", choices=("london", "essex"))
    ap.add_argument("--cache", type=Path, required=True, help="bench_fullres.py's --cache (the edits)")
    ap.add_argument("--settings", default="{}", help="DetailSettings fields of the output's mask, as JSON")
    ap.add_argument("--variants", nargs="*", default=[], help="NAME=JSON: masks of other DetailSettings")
    ap.add_argument("--json", type=Path, help="write the summary here (per reading: accuracy, mean p(requested))")
    args = ap.parse_args()
    from mien.analysis import FaceAnalyzer

    settings = detail_settings(args.settings)
    variants = {n: detail_settings(t) for n, t in (v.split("=", 1) for v in args.variants)}
    ok: dict[str, list[bool]] = {}
    p: dict[str, list[float]] = {}
    with FaceAnalyzer() as analyzer:
        chosen = split_people(people(args.raw), args.split, args.people, args.source)
        for person, label, d in cached_edits(args.cache, chosen):
            i = LABELS.index(label)
            for name, img in masks(analyzer, d, settings, variants).items():
                v = read(analyzer, img)
                ok.setdefault(name, []).append(v is not None and int(np.argmax(v)) == i)
                p.setdefault(name, []).append(0.0 if v is None else v[i])
            print(person, label, file=sys.stderr, flush=True)
    summary = {k: {"acc": round(float(np.mean(ok[k])), 4), "p": round(float(np.mean(p[k])), 4), "n": len(p[k])}
               for k in p}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(settings), "variants": args.variants, "split": args.split,
                                         "source": args.source, "summary": summary}, separators=(",", ":")) + "\n")
    for k, v in summary.items():
        print(f"{k:18s} accuracy {v['acc']:.3f}  p {v['p']:.3f}  n {v['n']}")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
