"""Personalisation benchmark (issue 20): tuning-free vs personalised generation for dev people with several
photos, personalised on K of them and scored on the others (docs/personalize.md).

1. here (MediaPipe): ``prepare`` aligns and measures every photo of the chosen dev people with the same
   code `mien personalize` runs (:func:`mien.personalize.inputs.prepare`) and writes the inputs to carry::

       python scripts/bench_personalize.py prepare --out .gpu_l20/bench --per-group 4 --max-photos 8

2. anywhere (CPU or GPU; no MediaPipe needed): ``run`` first tries each ``--variant`` (steps x rank) on the
   tuning people at K = 3 and keeps the one with the lowest median face-api distance to the held-out
   photos, then, with it, personalises each report person on K = 1, 3, 5 photos and generates the seven
   basic labels tuning-free and personalised (seed 0, default settings). Results go to ``results.json``
   as they come (``--minutes`` stops early, saying so); contact sheets for looking go to ``sheets/``::

       python scripts/bench_personalize.py run --inputs .gpu_l20/bench --out $OUT --minutes 5

3. ``report --results results.json``: the markdown table of docs/personalize.md.

Per output: face-api descriptor distance to each held-out photo of the person (median; verified when the
median is below dlib's 0.6), face-api's expression label, and for the overfitting check the smallest
face-api distance and latent L2 to the K training photos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
if os.environ.get("BENCH_LABELS"):  # a quick check of the script: fewer labels
    LABELS = tuple(os.environ["BENCH_LABELS"].split(","))
GROUPS = ("cfp", "essex94", "taiwanese")


def prepare(args) -> None:
    from PIL import Image

    from mien.evaluate import benchmark as bm
    from mien.face.landmarker import FaceLandmarker
    from mien.models.identity import IdentityEncoder
    from mien.personalize.inputs import prepare as prepare_photos

    bench = bm.load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    enc = IdentityEncoder.from_weights(mobilefacenet=False)
    people, tmp = [], Path(tempfile.mkdtemp())
    with FaceLandmarker(num_faces=2) as lm:
        for group in GROUPS:
            chosen = [i for i in bench.identities if i.group == group
                      and len(i.identity_photos) + len(i.scoring_photos) >= args.min_photos][: args.per_group]  # fmt: skip
            for ident in chosen:
                paths = []
                for p in [*ident.identity_photos, *ident.scoring_photos][: args.max_photos]:
                    path = tmp / f"{p}.png"
                    Image.fromarray(bench.image(p)).save(path)
                    paths.append(path)
                notes = []
                inputs = prepare_photos(lm, paths, enc, notes.append)
                k = len(people)
                inputs.save(out)
                (out / "inputs.safetensors").rename(out / f"person{k:03d}.safetensors")
                people.append({"id": ident.id, "group": group, "photos": [Path(n).stem for n in inputs.names],
                               "notes": notes})  # fmt: skip
                print(ident.id, len(inputs), notes, file=sys.stderr)
    shutil.rmtree(tmp)
    (out / "people.json").write_text(json.dumps(people, indent=1) + "\n")


def _faces(inputs):
    return [SimpleNamespace(pose=tuple(float(v) for v in e[52:] * 90.0), blendshapes=e[:52].copy()) for e in inputs.expression]


class _NoLandmarker:
    def detect(self, rgb, max_faces=None):
        raise RuntimeError("no landmarker here: the inputs are prepared")

    def close(self):
        pass


def run(args) -> None:
    import torch
    import torch.nn.functional as F

    from mien.builtin.model import MienModel
    from mien.expression.targets import ExpressionRequest
    from mien.io.output import contact_sheet
    from mien.models.faceapi_expression import EXPRESSIONS, FaceExpressionNet
    from mien.personalize.config import PersonalizeConfig
    from mien.personalize.inputs import PersonInputs
    from mien.personalize.run import expression_measure, person_tensors
    from mien.personalize.trainer import train_person
    from mien.pipeline import AlignedPhotos, MienPipeline, default_model_dir

    t_start = time.monotonic()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    src, out = Path(args.inputs), Path(args.out)
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    people = json.loads((src / "people.json").read_text())
    work = Path(tempfile.mkdtemp())
    expr_net = FaceExpressionNet.from_weights().to(dev).eval()
    results = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": [], "stopped_early": False}  # fmt: skip

    def load(k: int) -> PersonInputs:
        shutil.copy(src / f"person{k:03d}.safetensors", work / "inputs.safetensors")
        p = people[k]
        return PersonInputs.load(work, p["photos"], [""] * len(p["photos"]))

    def subset(inp: PersonInputs, idx) -> PersonInputs:
        return PersonInputs([inp.names[i] for i in idx], [""] * len(idx), inp.crops[idx], inp.mask[idx],
                            inp.features[idx], inp.expression[idx])  # fmt: skip

    @torch.no_grad()
    def describe(pipe, images: np.ndarray):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(dev)
        chip, _ = pipe.identity.crops(x)
        desc = pipe.identity.recognition(chip)
        small = F.interpolate(chip, size=(112, 112), mode="bilinear", antialias=True).clamp(0, 255)
        return desc.cpu().numpy(), [EXPRESSIONS[i] for i in expr_net.predict(small).argmax(1).tolist()]

    def one(pipe, variant: dict, k: int, K: int, split: str, sheet: bool) -> dict:
        inp = load(k)
        train_idx, held_idx = np.arange(K), np.arange(K, len(inp))
        train, held = subset(inp, train_idx), subset(inp, held_idx)
        aligned = AlignedPhotos(list(train.crops), _faces(train), [], [np.eye(2, 3)] * K, list(range(K)))
        ident = pipe.identity_input(aligned)
        held_desc, _ = describe(pipe, held.crops)
        train_desc, _ = describe(pipe, train.crops)
        with torch.no_grad():
            train_lat = pipe.taef2.encode(torch.from_numpy(train.crops).permute(0, 3, 1, 2).float().to(dev) / 255).cpu()
        cfg = dataclasses.replace(PersonalizeConfig(), steps=variant["steps"], rank=variant["rank"], alpha=float(variant["rank"]))
        model = MienModel.from_pretrained(default_model_dir()).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.monotonic()
        tensors = person_tensors(train, pipe.taef2, pipe.identity, dev)
        person_dir = work / f"p{k}_{K}"
        shutil.rmtree(person_dir, ignore_errors=True)
        res = train_person(model, tensors, cfg, person_dir, base_sha256=model.sha256,
                           photos=[{"name": n, "sha256": ""} for n in train.names],
                           expression=expression_measure(model, pipe.taef2, pipe.blendshape_net), progress=False)  # fmt: skip
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.monotonic() - t0
        rows, images = [], {}
        for mode in ("tuning_free", "personalised"):
            if mode == "personalised":
                pipe.load_person(person_dir)
            else:
                from mien.personalize import lora

                lora.enable(pipe.model.backbone.unet, False)
            imgs, lats = [], []
            for label in LABELS:
                gen = pipe(ident, ExpressionRequest(mix={label: 1.0}), n=1, seed=0)
                imgs.append(gen.images[0])
                lats.append(gen.latents[0])
            desc, pred = describe(pipe, np.stack(imgs))
            d_held = np.linalg.norm(desc[:, None] - held_desc[None], axis=-1)
            d_train = np.linalg.norm(desc[:, None] - train_desc[None], axis=-1)
            l_train = torch.cdist(torch.stack(lats).flatten(1), train_lat.flatten(1)).numpy() / np.sqrt(train_lat[0].numel())
            for i, label in enumerate(LABELS):
                rows.append({"mode": mode, "label": label, "pred": pred[i], "dist": float(np.median(d_held[i])),
                             "nearest_train": float(d_train[i].min()), "nearest_train_latent": float(l_train[i].min())})  # fmt: skip
            images[mode] = imgs
        if sheet:
            s = contact_sheet([*train.crops[:3], *images["tuning_free"], *images["personalised"]],
                              [f"train {i}" for i in range(min(K, 3))] + [f"TF {x}" for x in LABELS] + [f"P {x}" for x in LABELS],
                              f"{people[k]['id']} K={K} {variant}")  # fmt: skip
            s.save(out / "sheets" / f"{split}_{k:03d}_K{K}.png")
        return {"person": people[k]["id"], "group": people[k]["group"], "K": K, "held_out": len(held_idx), "split": split,
                "variant": variant, "train_s": round(train_s, 2), "adapter_bytes": res.adapter_bytes,
                "loss_first": res.losses[0], "loss_last": res.losses[-1], "rows": rows}  # fmt: skip

    def out_of_time() -> bool:
        return args.minutes and time.monotonic() - t_start > 60 * args.minutes

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    tune = [k for k, p in enumerate(people) if p["group"] != "taiwanese"][:: args.tune_every]
    report = [k for k in range(len(people)) if k not in tune]
    variants = [dict(zip(("steps", "rank"), map(int, v.split("x")))) for v in args.variant]
    best, best_score = variants[0], None
    if len(variants) > 1:
        for v in variants:
            pipe = MienPipeline.from_pretrained(device=str(dev), landmarker=_NoLandmarker())
            runs = [one(pipe, v, k, 3, "tune", False) for k in tune if len(people[k]["photos"]) > 3]
            results["runs"] += runs
            score = float(np.median([r["dist"] for run in runs for r in run["rows"] if r["mode"] == "personalised"]))
            print(f"tuning {v}: median distance {score:.3f}", file=sys.stderr)
            if best_score is None or score < best_score:
                best, best_score = v, score
            save()
    results["chosen"] = best
    pipe = MienPipeline.from_pretrained(device=str(dev), landmarker=_NoLandmarker())
    for K in args.ks:
        for k in report:
            if len(people[k]["photos"]) <= K:
                continue
            if out_of_time():
                results["stopped_early"] = True
                break
            results["runs"].append(one(pipe, best, k, K, "report", True))
            print(f"{people[k]['id']} K={K}: {results['runs'][-1]['train_s']} s", file=sys.stderr)
            save()
    save()
    shutil.rmtree(work)


def report(args) -> None:
    res = json.loads(Path(args.results).read_text())
    runs = [r for r in res["runs"] if r["split"] == "report"]
    print(f"device {res['device']}, torch {res['torch']}, {res['date']}, variant {res.get('chosen')}"
          + (", stopped early by --minutes" if res["stopped_early"] else ""))  # fmt: skip
    print("\n| group | K | people | verified TF -> P | median distance TF -> P | face-api label accuracy TF -> P "
          "| nearest training photo (face-api) TF -> P | nearest training latent TF -> P | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for group in GROUPS:
        for K in sorted({r["K"] for r in runs}):
            sel = [r for r in runs if r["group"] == group and r["K"] == K]
            if not sel:
                continue
            cells = []
            for key in ("verified", "dist", "acc", "nearest_train", "nearest_train_latent"):
                vals = []
                for mode in ("tuning_free", "personalised"):
                    rows = [x for r in sel for x in r["rows"] if x["mode"] == mode]
                    if key == "verified":
                        vals.append(np.mean([x["dist"] < 0.6 for x in rows]))
                    elif key == "acc":
                        vals.append(np.mean([x["pred"] == x["label"] for x in rows]))
                    else:
                        vals.append(np.median([x[key] for x in rows]))
                cells.append(f"{vals[0]:.2f} -> {vals[1]:.2f}")
            train_s = np.median([r["train_s"] for r in sel])
            print(f"| {group} | {K} | {len(sel)} | " + " | ".join(cells) + f" | {train_s:.1f} |")
    print("\nper label (all report runs), face-api accuracy TF -> P:")
    for label in LABELS:
        acc = [np.mean([x["pred"] == label for r in runs for x in r["rows"] if x["mode"] == m and x["label"] == label])
               for m in ("tuning_free", "personalised")]  # fmt: skip
        print(f"- {label}: {acc[0]:.2f} -> {acc[1]:.2f}")
    sizes = {r["adapter_bytes"] for r in res["runs"]}
    print(f"\nadapter size: {max(sizes) / 1e6:.2f} MB")
    for r in res["runs"]:
        if r["split"] == "tune":
            d = np.median([x["dist"] for x in r["rows"] if x["mode"] == "personalised"])
            print(f"- tune {r['person']} K={r['K']} {r['variant']}: median distance {d:.3f}, train {r['train_s']} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    p.add_argument("--per-group", type=int, default=4)
    p.add_argument("--min-photos", type=int, default=4)
    p.add_argument("--max-photos", type=int, default=8, help="photos kept per person (the carry limit)")
    p = sub.add_parser("run")
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--variant", action="append", default=None, help="STEPSxRANK (several: tuned on the tuning people)")
    p.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3, 5])
    p.add_argument("--tune-every", type=int, default=2, help="every n-th CFP/Essex person is a tuning person")
    p.add_argument("--minutes", type=float, default=0)
    p.add_argument("--device")
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "run" and not args.variant:
        args.variant = ["150x8"]
    {"prepare": prepare, "run": run, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
