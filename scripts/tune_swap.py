"""Compare swap settings on a slice of the swap benchmark's pairs (docs/swap.md, "Tuning").

    PYTHONPATH=src python scripts/tune_swap.py --pairs 12:15 --labels neutral,happy,angry,surprised \
        --config base='{}' --config desc1='{"descriptor_guidance": 1}' --out runs/tune.jsonl

Pairs are :func:`mien.evaluate.swap.pairs`' ring (person i into person i+1's first photo) of the benchmark,
indices START:STOP. Each config is a JSON object of :class:`mien.settings.GenerationSettings` fields (a
swap resolves the rest); ``paste`` in it picks the paste (``crop``, the swap default, or ``detail``).
Per swap one JSON line: the swap benchmark's measures of the pasted photo (:func:`mien.evaluate.swap.score_output`:
face-api distance to A's and B's scoring photos, pose error, face-api's label) plus MobileFaceNet's mean
cosine to A's and to B's scoring photos (``cos_a``, ``cos_b``: the check that stays independent of
descriptor guidance) and the generation's CPU seconds. Finished (config, item) lines are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="dev-wild.yaml")
    ap.add_argument("--pairs", default="12:15", help="START:STOP indices into the ring of pairs")
    ap.add_argument("--labels", default="neutral,happy,sad,angry,fearful,disgusted,surprised")
    ap.add_argument("--config", action="append", required=True, help="NAME=JSON settings (repeatable)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file (appended; outputs beside it)")
    args = ap.parse_args()


    from mien.analysis import FaceAnalyzer
    from mien.edit import Editor
    from mien.evaluate import benchmark as bm
    from mien.evaluate.swap import footprint, pairs, score_output
    from mien.expression.targets import parse_request
    from mien.paste import PASTES
    from mien.settings import GenerationSettings

    configs = {}
    for c in args.config:
        name, spec = c.split("=", 1)
        configs[name] = json.loads(spec)
    path = Path(args.benchmark)
    bench = bm.load(path if path.is_file() else bm.dev_path().with_name(args.benchmark))
    start, stop = (int(x) for x in args.pairs.split(":"))
    chosen = pairs(bench, None)[start:stop]
    labels = args.labels.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shots = args.out.with_suffix("")
    shots.mkdir(exist_ok=True)
    done = set()
    if args.out.is_file():
        done = {(r["config"], r["item"]) for r in map(json.loads, args.out.read_text().splitlines())}
    editor, analyzer = Editor.from_pretrained(), FaceAnalyzer("cpu")

    def describe(photos):
        found = [analyzer.analyze(bench.image(p)) for p in photos]
        found = [f[0] for f in found if f]
        return np.stack([f.faceapi for f in found]), np.stack([f.mobilefacenet for f in found])

    for pair in chosen:
        selfie, scene_rgb = bench.image(pair.selfie), bench.image(pair.scene)
        subject = editor.prepare([selfie], [str(pair.selfie)])
        scene = editor.scene(scene_rgb, 0, str(pair.scene))
        (a_desc, a_mfn), (b_desc, b_mfn) = describe(pair.a_scoring), describe(pair.b_scoring)
        scene_face = analyzer.analyze(scene_rgb)[0]
        weight = footprint(scene_rgb, scene.matrix)
        for name, spec in configs.items():
            spec = dict(spec)
            paste = PASTES[spec.pop("paste", "crop")]
            settings = GenerationSettings(**spec)
            for lab in labels:
                item = f"{pair.a}>{pair.b}:{lab}"
                if (name, item) in done:
                    continue
                cpu = time.process_time()
                crop = editor.edit(subject, parse_request(lab), settings, n=1, seed=0, paste=False,
                                   into=scene).crops[0]  # fmt: skip
                cpu = time.process_time() - cpu
                output = paste(scene_rgb, crop, scene.matrix, "background", landmarks=scene.landmarks)
                row = score_output(analyzer, output, scene_rgb, weight, scene_face, lab, a_desc, b_desc)
                faces = analyzer.analyze(output)
                if faces:
                    row["cos_a"] = float((a_mfn @ faces[0].mobilefacenet).mean())
                    row["cos_b"] = float((b_mfn @ faces[0].mobilefacenet).mean())
                base = item.replace(":", "_").replace(">", "_into_")
                Image.fromarray(crop).save(shots / f"{name}_{base}.png")
                rec = {"config": name, "settings": configs[name], "item": item, "label": lab, "cpu_s": round(cpu, 1),
                       **row}  # fmt: skip
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps({k: rec.get(k) for k in ("config", "item", "cpu_s", "dist_a", "dist_b", "cos_a",
                                                          "cos_b", "faceapi", "pose_err")}), flush=True)  # fmt: skip
    analyzer.close()
    editor.close()


if __name__ == "__main__":
    main()
