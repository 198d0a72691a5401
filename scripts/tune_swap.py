"""Compare swap settings on a slice of the swap benchmark's pairs (docs/swap.md, "Tuning").

    PYTHONPATH=src python scripts/tune_swap.py --pairs 12:15 --labels neutral,happy,angry,surprised \
        --config base='{}' --config desc1='{"descriptor_guidance": 1}' --out runs/tune.jsonl

Pairs are :func:`mien.evaluate.swap.pairs`' ring (person i into person i+1's first photo) of the benchmark,
indices START:STOP. Each config is a JSON object of :class:`mien.settings.GenerationSettings` fields (a
swap resolves the rest); ``paste`` in it picks the paste (``crop``, the swap default, or ``detail``), ``au`` sets
Action Units on top of each label's target (``"AU1=2,AU5=3"``, as ``mien generate --au``: a stronger request),
``intensity`` the label's intensity (``--intensity``, default 1), ``two_stage`` (true) a two-stage swap: the plain
swap at the swap defaults (stage 1, once per pair), then :func:`restage` toward the label with the config's settings
resolved as an edit's (stage 2; docs/swap.md, "Two-stage swap: tuning"), ``own`` (true) no swap: the edit of A's own
selfie, pasted into the selfie and scored against it (what the edit reads on the same people), ``model`` a saved model
folder instead of the built-in model (as ``mien generate --model``; docs/swap.md, "The interpolated model"),
``detail`` the detail paste's :class:`mien.detail.DetailSettings` fields changed from their defaults
(``{"paste": "detail", "detail": {"deinterlace": ""}}``: the detail paste without de-interlacing). Configs that
differ only in ``paste`` and ``detail`` share one generation per swap (made once, pasted each way: a paired
comparison of pastes; ``crop_of`` names the config whose generation a line reuses, ``cpu_s`` is that generation's).
Per swap one JSON line: the swap benchmark's measures of the pasted photo (:func:`mien.evaluate.swap.score_output`:
face-api distance to A's and B's scoring photos, pose error, face-api's label) plus MobileFaceNet's mean
cosine to A's and to B's scoring photos (``cos_a``, ``cos_b``: the check that stays independent of
descriptor guidance) and the generation's CPU seconds. ``--seed N`` (default 0) seeds every generation (a line
of another seed than 0 says ``seed``); finished (config, item, seed) lines are skipped on a rerun.
``--summary FILE...`` prints one row per config of the given JSON lines files instead (only the items every
config has, so the rows compare the same swaps; only the ``--labels`` asked for), with what face-api reads instead
of the label most often (packed lines too: :func:`read_lines`). ``--sheet OUT.jpg --summary FILE... --rank CONFIG`` writes a
contact sheet instead: per row the selfie, the scene (both aligned) and each config's face, for the median
and the worst swaps of CONFIG by face-api distance to A among the ``--labels`` asked for (``--rows`` of each, 4
by default; every swap when there are at most twice that). ``--pack OUT --summary FILE...`` writes their swaps as
packed lines instead (one a config and label, the measures rounded; :func:`pack`): how docs/history keeps a run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image


def read_lines(f: Path) -> list[dict]:
    """The swaps of a JSON lines file: one a line, or a packed line (one config and label, each other field a list
    with a value per swap, ``item`` included: how docs/history stores a run compactly) unpacked."""
    rows = []
    for r in map(json.loads, f.read_text().splitlines()):
        if isinstance(r["item"], list):
            lists = {k: v for k, v in r.items() if isinstance(v, list)}
            rows += [{**r, **{k: v[i] for k, v in lists.items()}} for i in range(len(r["item"]))]
        else:
            rows.append(r)
    return rows


def summary(files: list[Path], labels: list[str]) -> None:
    from collections import Counter

    rows = [r for f in files for r in read_lines(f)]
    rows = [r for r in rows if r["label"] in labels]
    by = {}
    for r in rows:
        by.setdefault(r["config"], {})[r["item"]] = r
    common = set.intersection(*(set(v) for v in by.values()))
    print(f"{len(common)} swaps each: config  verified_a  impostor_b  mean dist_a  dist_b  mfn cos_a  cos_b  "
          "label_ok  p_label  pose_mae  cpu_s  (n)  read instead")
    for name, items in by.items():
        rs = [items[i] for i in sorted(common) if not items[i].get("no_face")]
        rs = [{"label_ok": r["faceapi"] == r["label"], **r} for r in rs]  # a packed line keeps no label_ok
        m = lambda k: float(np.mean([r[k] for r in rs])) if all(k in r for r in rs) else float("nan")  # noqa: E731
        print(f"{name:>10} {np.mean([r['dist_a'] < 0.6 for r in rs]):.2f} {np.mean([r['dist_b'] < 0.6 for r in rs]):.2f} "
              f"{m('dist_a'):.3f} {m('dist_b'):.3f} {m('cos_a'):.3f} {m('cos_b'):.3f} {m('label_ok'):.2f} "
              f"{m('p_label') if all('p_label' in r for r in rs) else float('nan'):.2f} "
              f"{m('pose_err'):.1f} {m('cpu_s'):.0f}  (n={len(rs)})  "
              + ", ".join(f"{k} {v}" for k, v in Counter(r["faceapi"] for r in rs if not r["label_ok"]).most_common(3)))


# the fields a packed line keeps (pack), with the decimals they keep
PACKED = {"item": None, "outside_max": 0, "seam": 4, "no_face": None, "dist_a": 4, "dist_b": 4, "pose_err": 2,
          "faceapi": None, "p_label": 4}


def pack(files: list[Path], out: Path, labels: list[str]) -> None:
    """The swaps of ``files`` (of the ``labels``) as packed lines in ``out``: one line a config, label and seed, its
    config, settings, label and seed (where not 0) once, every field of :data:`PACKED` a list with a value per swap
    (None where a swap has none; ``no_face`` only where a swap has no face), compact JSON; :func:`read_lines` unpacks
    them."""
    groups = {}
    for r in (r for f in files for r in read_lines(f) if r["label"] in labels):
        groups.setdefault((r["config"], r["label"], r.get("seed", 0)), []).append(r)
    keep = lambda v, d: v if d is None or v is None else round(v, d) if d else int(v)  # noqa: E731
    with out.open("w") as f:
        for (name, lab, seed), rows in groups.items():
            fields = {k: [keep(r.get(k), d) for r in rows] for k, d in PACKED.items()}
            fields = {k: v for k, v in fields.items() if any(x is not None and x is not False for x in v)}
            line = {"config": name, "settings": rows[0].get("settings", {}), "label": lab,
                    **({"seed": seed} if seed else {}), **fields}
            f.write(json.dumps(line, separators=(",", ":")) + "\n")


def load_benchmark(name: str):
    from mien.evaluate import benchmark as bm

    path = Path(name)
    return bm.load(path if path.is_file() else bm.dev_path().with_name(name))


def sheet(files: list[Path], rank: str, out: Path, bench, labels: list[str], n: int = 4) -> None:
    from mien.evaluate.swap import pairs
    from mien.face.landmarker import FaceLandmarker
    from mien.io.grid import grid
    from mien.pipeline import align_photo

    by, folder = {}, {}
    for f in files:
        for r in read_lines(f):
            if r["label"] in labels:
                by.setdefault(r["config"], {})[r["item"]] = r
                folder[r["config"]] = f.with_suffix("")
    common = sorted(set.intersection(*(set(v) for v in by.values())), key=lambda i: by[rank][i].get("dist_a", 9))
    mid = len(common) // 2
    picked = common if len(common) <= 2 * n else common[mid - n // 2: mid + n - n // 2] + common[-n:]
    photos = {(p.a, p.b): p for p in pairs(bench)}
    landmarker = FaceLandmarker()
    rows, captions = [], []
    for item in picked:
        a, rest = item.split(">")
        b, label = rest.rsplit(":", 1)
        pair = photos[(a, b)]
        rows.append([align_photo(landmarker, bench.image(photo))[0] for photo in (pair.selfie, pair.scene)])
        captions.append(["", label])
        for name in by:
            r = by[name][item]
            seed = f"_s{r['seed']}" if r.get("seed") else ""  # a seed other than 0: its face's file says it
            base = item.replace(":", "_").replace(">", "_into_")
            rows[-1].append(Image.open(folder[name] / f"{name}_{base}{seed}.png"))
            captions[-1].append(f"{name} {r.get('dist_a', 0):.2f} {r.get('faceapi', '')[:4]}")
    landmarker.close()
    grid(rows, captions).save(out, quality=90)
    print(f"{out}: rows {picked}; columns selfie, scene, {', '.join(by)}")


def restage(editor, subject, first, request, settings):
    """Stage 2 of a two-stage swap: the 128 px face of ``first`` (stage 1, a swap of ``subject`` into a scene, one
    image) edited toward ``request`` as an edit of the subject's own photo is, with ``settings`` resolved as an
    edit's (identity guidance 1, the edit's label policy and targets; not SWAP_DEFAULTS).

    Both FlowEdit rows take the subject's identity stream, as in an edit: its identity vector and recogniser target,
    and as the spatial reference the stage-1 face itself (an edit's reference is the photo it edits, so the reference
    says nothing the edited photo does not). The stage-1 face's own expression (the source rows) is MediaPipe's
    reading of it; its pose is the scene's, which stage 1 kept; it stays in the scene face's crop."""
    import dataclasses

    scene = first.scene
    faces = editor.pipeline.landmarker.detect(first.crops[0])
    own = faces[0].blendshapes if faces else scene.identity.blendshapes  # none found: stage 1's target
    identity = dataclasses.replace(subject.identity, latent=first.generation.latents[0], pose=scene.identity.pose,
                                   blendshapes=own)  # fmt: skip
    return editor.pipeline(identity, request, settings, n=1, seed=first.generation.seeds[0]).images[0]


PASTE_KEYS = ("paste", "detail")  # config keys that change only how the generated face is pasted


def generation_key(spec: dict) -> str:
    """What a config's generation depends on: the config without :data:`PASTE_KEYS` (configs with the same key make
    the same face for the same swap, so main makes it once)."""
    return json.dumps({k: v for k, v in spec.items() if k not in PASTE_KEYS}, sort_keys=True)


def paste_of(spec: dict):
    """The paste function of a config: :data:`mien.paste.PASTES`' ``paste`` (default ``crop``), for ``detail`` with
    the config's ``detail`` fields of :class:`mien.detail.DetailSettings` changed from the defaults."""
    import dataclasses
    import functools

    from mien.detail import DEFAULT, transfer_detail
    from mien.paste import PASTES

    how, over = spec.get("paste", "crop"), spec.get("detail")
    if over is None:
        return PASTES[how]
    if how != "detail":
        raise SystemExit(f"config key 'detail' needs \"paste\": \"detail\", not {how!r}")
    return functools.partial(transfer_detail, settings=dataclasses.replace(DEFAULT, **over))


def config(spec: dict, label: str):
    """(paste name, request, settings, mode) of one config (module docstring) for ``label``: ``paste``, ``au``,
    ``intensity``, ``two_stage`` and ``own`` shape the paste, the request and what is made (mode "swap", "two_stage"
    or "own"), ``model`` is read by :func:`main`, every other key is a GenerationSettings field."""
    from mien.expression.targets import parse_request
    from mien.settings import GenerationSettings

    spec = dict(spec)
    spec.pop("model", None)  # which model makes it: main's editors
    spec.pop("detail", None)  # the detail paste's settings: paste_of
    how = spec.pop("paste", "crop")
    au = spec.pop("au", None)  # AUs set on top of the label's target ("AU1=3,AU5=2"): a stronger request
    intensity = spec.pop("intensity", 1.0)  # the label's intensity (mien generate --intensity)
    mode = "two_stage" if spec.pop("two_stage", False) else "own" if spec.pop("own", False) else "swap"
    return how, parse_request(label, intensity, au=au), GenerationSettings(**spec), mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="dev-wild.yaml")
    ap.add_argument("--pairs", default="12:15", help="START:STOP indices into the ring of pairs")
    ap.add_argument("--labels", default="neutral,happy,sad,angry,fearful,disgusted,surprised")
    ap.add_argument("--config", action="append", help="NAME=JSON settings (repeatable)")
    ap.add_argument("--out", type=Path, help="JSON lines file (appended; outputs beside it)")
    ap.add_argument("--seed", type=int, default=0, help="the generations' seed (default 0)")
    ap.add_argument("--summary", type=Path, nargs="+", help="summarise these JSON lines files instead")
    ap.add_argument("--sheet", type=Path, help="with --summary: write a contact sheet here instead")
    ap.add_argument("--rank", help="with --sheet: the config whose median and worst swaps are shown")
    ap.add_argument("--rows", type=int, default=4, help="with --sheet: how many median and how many worst swaps")
    ap.add_argument("--pack", type=Path, help="with --summary: write their swaps here as packed lines instead")
    args = ap.parse_args()
    if args.pack:
        return pack(args.summary, args.pack, args.labels.split(","))
    if args.sheet:
        return sheet(args.summary, args.rank, args.sheet, load_benchmark(args.benchmark), args.labels.split(","),
                     args.rows)
    if args.summary:
        return summary(args.summary, args.labels.split(","))


    from mien.analysis import FaceAnalyzer
    from mien.edit import Editor
    from mien.evaluate.swap import faces_of, footprint, pairs, score_output

    configs = {}
    for c in args.config:
        name, spec = c.split("=", 1)
        configs[name] = json.loads(spec)
    bench = load_benchmark(args.benchmark)
    start, stop = (int(x) for x in args.pairs.split(":"))
    chosen = pairs(bench, None)[start:stop]
    labels = args.labels.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shots = args.out.with_suffix("")
    shots.mkdir(exist_ok=True)
    done, done_cpu = set(), {}
    if args.out.is_file():
        for r in map(json.loads, args.out.read_text().splitlines()):
            if r.get("seed", 0) == args.seed:
                done.add((r["config"], r["item"]))
                done_cpu[(r["config"], r["item"])] = r.get("cpu_s", 0.0)
    analyzer = FaceAnalyzer("cpu")
    editors = {m: Editor.from_pretrained(m) for m in {c.get("model", "default") for c in configs.values()}}

    def describe(photos):
        found = [analyzer.analyze(bench.image(p)) for p in photos]
        found = [f[0] for f in found if f]
        return np.stack([f.faceapi for f in found]), np.stack([f.mobilefacenet for f in found])

    for pair in chosen:
        selfie, scene_rgb = bench.image(pair.selfie), bench.image(pair.scene)
        inputs = {m: (e.prepare([selfie], [str(pair.selfie)]), e.scene(scene_rgb, 0, str(pair.scene)))
                  for m, e in editors.items()}  # each model encodes its own latents
        subject, scene = inputs[next(iter(editors))]
        (a_desc, a_mfn), (b_desc, b_mfn) = describe(pair.a_scoring), describe(pair.b_scoring)
        scene_face = analyzer.analyze(scene_rgb)[0]
        weight = footprint(scene_rgb, scene.matrix)
        first = None  # a two-stage config's stage 1: the plain swap, the same for every label and config
        made = {}  # (generation_key, label) -> (the 128 px face, its generation's CPU seconds, the config that made it)
        for name, spec in configs.items():
            for lab in labels:
                item = f"{pair.a}>{pair.b}:{lab}"
                if (name, item) in done:
                    continue
                _, request, settings, mode = config(spec, lab)
                editor = editors[spec.get("model", "default")]
                subject, scene = inputs[spec.get("model", "default")]
                paste = paste_of(spec)
                base = item.replace(":", "_").replace(">", "_into_") + (f"_s{args.seed}" if args.seed else "")
                key, shared = (generation_key(spec), lab), None
                if key not in made:  # a config that differs only in its paste made it before this run: its face
                    for other in configs:
                        if other != name and generation_key(configs[other]) == key[0] \
                                and (shots / f"{other}_{base}.png").is_file() and (other, item) in done:
                            made[key] = (np.asarray(Image.open(shots / f"{other}_{base}.png").convert("RGB")),
                                         done_cpu.get((other, item), 0.0), other)  # fmt: skip
                            break
                cpu = time.process_time()
                if key in made:
                    crop, cpu, shared = made[key]
                elif mode == "two_stage":
                    if first is None:
                        plain = editor.scene_request(None, scene)
                        first = editor.edit(subject, plain, None, n=1, seed=args.seed, paste=False, into=scene)
                        first_cpu = time.process_time() - cpu
                        cpu = time.process_time()
                    crop = restage(editor, subject, first, request, settings)
                    cpu -= first_cpu  # every swap counts its stage 1 once
                else:
                    crop = editor.edit(subject, request, settings, n=1, seed=args.seed, paste=False,
                                       into=None if mode == "own" else scene).crops[0]  # fmt: skip
                if shared is None:
                    cpu = time.process_time() - cpu
                    made[key] = (crop, cpu, name)
                if mode == "own":  # the edit of A's own selfie, pasted into it and scored against it
                    output = paste(selfie, crop, subject.matrix, "background", landmarks=subject.landmarks)
                    row = score_output(analyzer, output, selfie, footprint(selfie, subject.matrix),
                                       analyzer.analyze(selfie)[0], lab, a_desc, b_desc)  # fmt: skip
                else:
                    output = paste(scene_rgb, crop, scene.matrix, "background", landmarks=scene.landmarks)
                    row = score_output(analyzer, output, scene_rgb, weight, scene_face, lab, a_desc, b_desc)
                faces = faces_of(analyzer, output)
                if faces:
                    row["cos_a"] = float((a_mfn @ faces[0].mobilefacenet).mean())
                    row["cos_b"] = float((b_mfn @ faces[0].mobilefacenet).mean())
                Image.fromarray(crop).save(shots / f"{name}_{base}.png")
                rec = {"config": name, "settings": configs[name], "item": item, "label": lab, "cpu_s": round(cpu, 1),
                       **({"seed": args.seed} if args.seed else {}), **({"crop_of": shared} if shared else {}),
                       **row}  # fmt: skip
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps({k: rec.get(k) for k in ("config", "item", "cpu_s", "dist_a", "dist_b", "cos_a",
                                                          "cos_b", "faceapi", "pose_err")}), flush=True)  # fmt: skip
    analyzer.close()
    for e in editors.values():
        e.close()


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
