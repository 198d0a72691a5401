"""Why is the personalised model no nearer the person? (docs/personalize.md, the section of that name)

On prepared inputs (``python -m mien.evaluate.personalize prepare``), each person is personalised on K
photos with the code the benchmark runs (:func:`mien.personalize.trainer.train_person`), stopping at
each of ``--at`` steps (one run resumed, so the 150-step state is the default run's), and at each:

- generation: the seven labels, seed 0, default settings (FlowEdit), tuning-free (LoRA off) and
  personalised: face-api median distance to the held-out photos, labels read, and how far the LoRA moves
  the output (latent RMS and pixel RMS between the TF and P output of the same label and seed);
  ``--sdedit S`` adds the same with ``--method sdedit --strength S`` at the last step count;
- the LoRA's effect on one prediction: the velocity's relative change (scale 1 vs 0) on the training
  photo noised to t = 0.5, and the relative change of the FlowEdit direction v(requested) - v(own
  expression) at the same point, mean over the six non-neutral labels (FlowEdit moves the photo by that
  difference, so a change the LoRA makes to both rows cancels), and that direction's size P / TF;
- the flow-matching loss at fixed draws (t in 0.1 .. 0.9, two noises) of the base model (scale 0) and the
  LoRA (scale 1) on the training photos as trained (spatial reference: another photo, none at K = 1), on
  the held-out photos (each with its own expression, the training identity vector, the first training
  photo as the reference, as generation gives), and on the prior faces;
- how far the one-step predictions of edit requests show the expression asked for (:func:`edit_shown`, base
  model and LoRA, fixed draws).

``--sheets DIR`` also writes each row's training photo, TF and P outputs as a contact sheet (for looking only).

``--variants`` generates with one trained adapter in several ways (generation settings such as
``person_rows`` and ``person_scale``, :class:`mien.settings.GenerationSettings`): one row per variant, the
training, probes and tuning-free outputs shared, so the variants differ by generation alone.

Plus the "photo floor" (:func:`photo_floor`): the training photos' own face-api distance to the held-out
photos. One JSON line per (person, steps) on stdout and appended to ``--out``. ``--floor 1,3,5`` gives
only the photo floor of every prepared person (held-out photos as the benchmark takes them), no training.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/why_personalize.py --inputs DIR --out rows.jsonl \
        --people cfp:451,essex:0 --at 50,150,300 [--prior-weight 0] [--expression-weight 0] [--sdedit 0.8] \
        [--edit-identity-weight 1 --edit-identity-gate 0.5] [--direction-weight 3] \
        [--variants 'person_rows=both;person_rows=target'] [any generation setting flag, e.g. --person-rows target]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from mien.cli.settings_flags import add_setting_flags, settings_from_args
from mien.evaluate.benchmark import LABELS
from mien.evaluate.personalize import (Scorer, base_model, held_out_start, load_person, lora_config,
                                      pipeline_without_landmarker, subset)
from mien.personalize import lora
from mien.personalize.prior import label_blendshapes
from mien.personalize.run import expression_measure, identity_nets, person_tensors
from mien.personalize.trainer import CHECKPOINT, train_person
from mien.settings import GenerationSettings

T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)


def flow_loss(model, x0, cond, null=None) -> float:
    """Mean squared flow error at the fixed draws (t in T_GRID, noises of seeds 0 and 1)."""
    out = []
    for seed in (0, 1):
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        for t in T_GRID:
            tt = torch.full((x0.shape[0],), t)
            v = model.velocity((1 - t) * x0 + t * eps, tt, cond, null=null)
            out.append(float((v - (eps - x0)).square().mean()))
    return float(np.mean(out))


def cond_of(model, identity, expression, reference):
    c = {"identity": identity[None].expand(len(expression), -1), "expression": expression}
    if getattr(model.backbone.config, "reference", False):
        c["reference"] = reference
    return c


def edit_shown(net, tensors, measure) -> float:
    """How far the one-step predictions of edit requests show the expression asked for: the mean over 8 fixed
    draws (the photo noised to t in 0.1 .. 0.5, a basic label unlike its own, as the edit-identity loss asks) of
    d² / d0², the squared blendshape distance of the decoded prediction to the request over that of the photo's
    own expression (0: the request met; 1: the photo's expression kept; as
    :func:`mien.personalize.losses.expression_gate` reads it)."""
    from mien.personalize.losses import Step, requested_prediction

    targets = torch.from_numpy(np.stack(list(label_blendshapes().values()))).float()
    p = requested_prediction(Step(net, tensors, None, torch.Generator().manual_seed(77), 8, 0.5), targets, 8, (0.1, 0.5))
    d2 = (measure(p["x0_hat"]) - p["goal"])[:, 1:].square().sum(1)
    return float((d2 / (p["own"] - p["goal"])[:, 1:].square().sum(1)).mean())


@torch.no_grad()
def probes(net, tensors, held, prior, scale: float, measure=None) -> dict:
    """The flow losses and the t = 0.5 predictions with the LoRA at ``scale`` (and :func:`edit_shown` with
    ``measure``)."""
    lora.set_scale(net.backbone.unet, scale)
    x0 = net.normalize(tensors.latents)
    ref_train = torch.zeros_like(tensors.latents) if len(tensors) == 1 else tensors.latents.roll(1, 0)
    out = {"train": flow_loss(net, x0, cond_of(net, tensors.identity, tensors.expression, ref_train))}
    hx = net.normalize(held.latents)
    out["held"] = flow_loss(net, hx, cond_of(net, tensors.identity, held.expression,
                                             tensors.latents[:1].expand(len(hx), -1, -1, -1)))  # fmt: skip
    if prior is not None:
        null = {"identity": torch.ones(len(prior.latents), dtype=torch.bool)}
        out["prior"] = flow_loss(net, prior.latents, {"expression": prior.expression}, null)
    # one FlowEdit-like point: the first training photo at t = 0.5, own expression vs each label
    eps = torch.randn(x0[:1].shape, generator=torch.Generator().manual_seed(0))
    x_t = 0.5 * x0[:1] + 0.5 * eps
    own = tensors.expression[:1]
    targets = [torch.cat([torch.from_numpy(b).float()[None], own[:, 52:]], 1)
               for k, b in label_blendshapes().items() if k != "neutral"]  # fmt: skip
    expr = torch.cat([own, *targets])
    v = net.velocity(x_t.expand(len(expr), -1, -1, -1), torch.full((len(expr),), 0.5),
                     cond_of(net, tensors.identity, expr, tensors.latents[:1].expand(len(expr), -1, -1, -1)))  # fmt: skip
    out["v"] = v
    if measure is not None:
        out["edit_shown"] = edit_shown(net, tensors, measure)
    lora.set_scale(net.backbone.unet, 1.0)
    return out


def lora_effect(p0: dict, p1: dict) -> dict:
    v0, v1 = p0.pop("v"), p1.pop("v")
    d0, d1 = v0[1:] - v0[:1], v1[1:] - v1[:1]
    rel = lambda a, b: float((a - b).flatten(1).norm(dim=1).mean() / b.flatten(1).norm(dim=1).mean())  # noqa: E731
    size = float(d1.flatten(1).norm(dim=1).mean() / d0.flatten(1).norm(dim=1).mean())
    return {"v_change": rel(v1[:1], v0[:1]), "edit_direction_change": rel(d1, d0), "edit_size_ratio": size}


def photo_floor(train_desc, held_desc) -> float:
    """The training photos' own distance to the held-out photos: the median over training photos of each
    one's median face-api distance to the held-out photos (as an output's distance is taken)."""
    return float(np.median(np.median(np.linalg.norm(train_desc[:, None] - held_desc[None], axis=-1), axis=1)))


def generate(pipe, ident, settings, labels=LABELS):
    from mien.expression.targets import ExpressionRequest

    gens = [pipe(ident, ExpressionRequest(mix={label: 1.0}), settings, n=1, seed=0) for label in labels]
    return np.stack([g.images[0] for g in gens]), torch.cat([g.latents for g in gens])


def scores(scorer, imgs, held_desc, train_desc) -> dict:
    desc, pred, _ = scorer(imgs)
    d_held = np.linalg.norm(desc[:, None] - held_desc[None], axis=-1)
    return {"dist": float(np.median(np.median(d_held, axis=1))), "dists": np.median(d_held, axis=1).round(4).tolist(),
            "verified": int((np.median(d_held, axis=1) < 0.6).sum()), "read": int(sum(p == l for p, l in zip(pred, LABELS))),
            "nearest_train": float(np.median(np.linalg.norm(desc[:, None] - train_desc[None], axis=-1).min(1)))}  # fmt: skip


def compare(pipe, ident, settings, scorer, held_desc, train_desc, tf=None, sheet=None) -> dict:
    """TF and P outputs' figures; ``sheet`` (path, training crops): also a contact sheet there (for looking;
    never committed: only London-set faces may be)."""
    lora.enable(pipe.model.backbone.unet, False)
    tf = tf or generate(pipe, ident, settings)
    lora.enable(pipe.model.backbone.unet, True)
    p = generate(pipe, ident, settings)
    lat = float((p[1] - tf[1]).flatten(1).square().mean(1).sqrt().mean())
    pix = float(np.sqrt(((p[0].astype(float) - tf[0].astype(float)) ** 2).reshape(len(p[0]), -1).mean(1)).mean())
    if sheet is not None:
        from mien.io.grid import grid

        path, crops = sheet
        names = [[f"train {i}" for i in range(len(crops))], [f"TF {x}" for x in LABELS], [f"P {x}" for x in LABELS]]
        grid([list(crops), list(tf[0]), list(p[0])], names, path.stem).save(path)
    return {"tf": scores(scorer, tf[0], held_desc, train_desc), "p": scores(scorer, p[0], held_desc, train_desc),
            "latent_rms_p_vs_tf": lat, "pixel_rms_p_vs_tf": pix}, tf  # fmt: skip


def person_run(pipe, base, scorer, args, k: int, person: dict, K: int, config, log) -> None:
    from mien.expression.targets import POSE_SCALE
    from mien.personalize.losses import PriorSet
    from mien.pipeline import AlignedPhotos

    inputs = load_person(Path(args.inputs), k, person)
    held_from = held_out_start(len(inputs), args.held_ks or [K])  # the benchmark's held-out photos for these Ks
    train, held = subset(inputs, range(K)), subset(inputs, range(held_from, len(inputs)))
    faces = [SimpleNamespace(pose=tuple(float(v) for v in e[52:] * POSE_SCALE), blendshapes=e[:52].copy())
             for e in train.expression]  # fmt: skip
    ident = pipe.identity_input(AlignedPhotos(list(train.crops), faces, [], [np.eye(2, 3)] * K, list(range(K))))
    held_desc, train_desc = scorer(held.crops)[0], scorer(train.crops)[0]
    floor = photo_floor(train_desc, held_desc)
    tensors = person_tensors(train, pipe.taef2, pipe.identity, pipe.device)
    held_t = person_tensors(held, pipe.taef2, pipe.identity, pipe.device)
    work = Path(tempfile.mkdtemp())
    tf, tf_sd = None, None
    try:
        for n in args.at:
            model = copy.deepcopy(base)
            measure = expression_measure(model, pipe.taef2, pipe.blendshape_net) if config.reads_blendshapes else None
            nets = identity_nets(pipe.taef2, pipe.device) if config.losses.judge_identity else None
            t0 = time.monotonic()
            res = train_person(model, tensors, config, work, base_sha256=pipe.model.sha256, expression=measure,
                               photos=[{"name": x, "sha256": ""} for x in train.names], progress=False,
                               stop_after=n, identity_nets=nets)  # fmt: skip
            train_s = time.monotonic() - t0
            ck = work / CHECKPOINT
            prior = None
            if ck.is_file():
                p = torch.load(ck, weights_only=True)["prior"]
                prior = None if p is None else PriorSet(p["latents"], p["expression"])
            if prior is None and args.prior_cache.get(person["id"]) is not None:
                prior = args.prior_cache[person["id"]]
            args.prior_cache[person["id"]] = prior
            m = measure[0] if measure is not None else None
            p0, p1 = probes(model, tensors, held_t, prior, 0.0, m), probes(model, tensors, held_t, prior, 1.0, m)
            eff = lora_effect(p0, p1)
            pipe.load_person(work)
            for variant in args.variants:  # one trained adapter, several ways to generate with it
                settings = dataclasses.replace(args.settings, **variant)
                sheet = None
                if args.sheets:
                    name = f"{person['id'].replace(':', '_')}_{n}_{settings.person_rows}_{settings.person_scale:g}.png"
                    sheet = (Path(args.sheets) / name, list(train.crops[:3]))
                row, tf = compare(pipe, ident, settings, scorer, held_desc, train_desc, tf, sheet)
                row = {"person": person["id"], "K": K, "steps": res.steps_done, "prior_weight": config.losses.prior,
                       "expression_weight": config.losses.expression, "identity_weight": config.losses.identity,
                       "edit_identity_weight": config.losses.edit_identity,
                       "edit_identity_gate": config.edit_identity_gate,
                       "edit_identity_hold": config.edit_identity_hold, "direction_weight": config.losses.direction,
                       "person_rows": settings.person_rows,
                       "person_scale": settings.person_scale, "photo_floor": floor, "train_s": round(train_s, 1),
                       **row, **eff, "loss_base": p0, "loss_lora": p1,
                       "train_loss_last10": {key: float(np.mean([r[key] for r in res.losses[-10:] if key in r]))
                                             for key in ("total", "flow", "landmarks", "prior", "expression",
                                                         "identity", "edit_identity", "direction")
                                             if any(key in r for r in res.losses[-10:])}}  # fmt: skip
                if args.sdedit and n == args.at[-1]:
                    s = GenerationSettings(method="sdedit", strength=args.sdedit)
                    row["sdedit"], tf_sd = compare(pipe, ident, s, scorer, held_desc, train_desc, tf_sd)
                log(row)
            del model
    finally:
        shutil.rmtree(work, ignore_errors=True)


def variants(text: str) -> list[dict]:
    """'person_rows=target,person_scale=1.5;person_rows=both' -> [{'person_rows': 'target', 'person_scale': 1.5}, ...]."""
    types = {f.name: type(f.default) if f.default is not None else str for f in GenerationSettings.fields()}
    out = []
    for part in text.split(";"):
        pairs = [kv.split("=", 1) for kv in part.split(",") if kv.strip()]
        out.append({k.strip(): types[k.strip()](v) for k, v in pairs})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--people", default="cfp:451,essex:0")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--at", type=lambda v: [int(x) for x in v.split(",")], default=[50, 150, 300])
    ap.add_argument("--prior-weight", type=float)
    ap.add_argument("--expression-weight", type=float)
    ap.add_argument("--identity-weight", type=float)
    ap.add_argument("--edit-identity-weight", type=float, help="weight of the identity loss at a requested expression")
    ap.add_argument("--edit-identity-gate", type=float,
                    help="width of the edit-identity loss's expression gate "
                    "(PersonalizeConfig.edit_identity_gate; 0: off)")
    ap.add_argument("--edit-identity-hold", type=float,
                    help="weight of the expression pull on the edit-identity loss's own rows "
                    "(PersonalizeConfig.edit_identity_hold; 0: off)")
    ap.add_argument("--direction-weight", type=float,
                    help="weight of the direction-keeping loss (LossWeights.direction; 0: off)")
    ap.add_argument("--held-ks", type=lambda v: [int(x) for x in v.split(",")],
                    help="held-out photos as the benchmark takes them for these Ks (default: all after the K trained on)")
    ap.add_argument("--sdedit", type=float, help="also compare with --method sdedit at this strength (last step count)")
    ap.add_argument("--sheets", help="also write each row's training photos, TF and P outputs as a contact sheet into "
                    "this folder (for looking; never commit them: only London-set faces may be)")
    ap.add_argument("--floor", type=lambda v: [int(x) for x in v.split(",")],
                    help="only the photo floor of every prepared person at these K (no training)")
    ap.add_argument("--variants", type=variants, default=[{}],
                    help="personalised generations of one trained adapter, ';' between variants, each 'name=value,...' "
                    "of generation settings over the others given, e.g. 'person_rows=both;person_rows=target,"
                    "person_scale=1.5' (default: one, the settings given)")
    add_setting_flags(ap, "generation: ")
    args = ap.parse_args()
    args.settings = settings_from_args(args)
    args.prior_cache = {}
    if args.sheets:
        Path(args.sheets).mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(True)
    config = lora_config(args.at[-1], None, args.identity_weight, args.expression_weight, args.edit_identity_weight)
    for name in ("edit_identity_gate", "edit_identity_hold"):
        if getattr(args, name) is not None:
            config = dataclasses.replace(config, **{name: getattr(args, name)})
    for name in ("prior", "direction"):
        if getattr(args, f"{name}_weight") is not None:
            config = dataclasses.replace(config, losses=dataclasses.replace(config.losses,
                                                                            **{name: getattr(args, f"{name}_weight")}))
    pipe = pipeline_without_landmarker("cpu")
    scorer, base = Scorer.from_pipeline(pipe), base_model(pipe.model)
    people = json.loads((Path(args.inputs) / "people.json").read_text())
    if args.floor:
        for k, person in enumerate(people):
            desc = scorer(load_person(Path(args.inputs), k, person).crops)[0]
            start = held_out_start(len(desc), args.floor)
            print(json.dumps({"person": person["id"], "group": person["group"], "held_out": len(desc) - start,
                              **{f"floor_k{K}": photo_floor(desc[:K], desc[start:]) for K in args.floor if K < len(desc)}}))
        return

    def log(row):
        line = json.dumps(row, separators=(",", ":"))
        print(line, flush=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")

    for k, person in enumerate(people):
        if person["id"] in args.people.split(","):
            person_run(pipe, base, scorer, args, k, person, args.k, config, log)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
