"""The personalisation benchmark (`mien evaluate --personalize K ...`, docs/personalize.md).

Each benchmark person with at least K + 1 photos is personalised (:func:`mien.personalize.train_person`,
the code `mien personalize` runs) on K of their photos and scored on photos never used: the seven basic
labels, one seed, generated tuning-free (the LoRA off) and personalised, from the same identity input
(the K photos). The K training photos are the person's first K in an order that puts neutral photos
first (the benchmark's label, else face-api's reading), so that small K trains on neutral photos where
the data has them; the held-out photos are the same for every K of one person (those after the largest
K the person allows), so the figures of one person compare across K.

Two halves, so a GPU machine without MediaPipe runs the same code:

1. :func:`prepare` (MediaPipe): aligns and measures every photo (:func:`mien.personalize.inputs.prepare`)
   into ``person-NNN.safetensors`` + ``people.json``;
2. :func:`run` (CPU or GPU): personalises, generates and scores each (person, K) into ``items.jsonl``
   (a rerun resumes; ``shard`` splits the jobs between processes sharing one GPU) and contact sheets
   into ``sheets/``; :mod:`mien.evaluate.personalize_summary` makes ``summary.json`` and ``summary.md``.

``python -m mien.evaluate.personalize prepare|run|report`` runs each half alone (``--help``).

Per output (definitions: :data:`mien.evaluate.personalize_summary.DEFINITIONS`, also in summary.json): the median face-api descriptor
distance to the held-out photos (verified below dlib's 0.6), face-api's expression label, the blendshape
distance to the nearest training photo's own expression (MediaPipe's blendshape net in PyTorch, the same
net reads both), and the overfitting check: the face-api distance, latent RMS and pixel RMS to the
nearest training photo. People in :data:`TUNING_PEOPLE` chose the defaults; tables cover the others.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mien.errors import MienError
from mien.evaluate.benchmark import LABELS
from mien.evaluate.personalize_summary import DEFINITIONS, NEAR_COPY, finished, markdown, report, summarise  # noqa: F401

# The dev people personalisation's settings were chosen on (docs/personalize.md, "Choosing the defaults"):
# their runs are kept apart ("tune") from the reported figures.
TUNING_PEOPLE = ("cfp:451", "essex:0")
@dataclass
class Scorer:
    """Reads aligned 128 px crops (uint8 (N, 128, 128, 3)): face-api descriptors (N, 128), face-api's
    expression labels, and blendshapes (N, 52). Built from the pipeline's nets by :meth:`from_pipeline`."""

    descriptors: object  # (N, 3, 128, 128) float 0..255 -> (N, 128)
    labels: object  # (N, 3, 128, 128) float 0..255 -> list of label names
    blendshapes: object  # (N, 3, 128, 128) float 0..1 -> (N, 52)
    device: object

    def __call__(self, crops: np.ndarray):
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().to(self.device)
            return (self.descriptors(x).double().cpu().numpy(), list(self.labels(x)),
                    self.blendshapes(x / 255).double().cpu().numpy())  # fmt: skip

    @classmethod
    def from_pipeline(cls, pipe) -> "Scorer":
        """face-api's descriptor and expression classifier on the dlib chip of the crop (the expression net's
        112 px input, as :mod:`mien.analysis` feeds it), and the pipeline's blendshape net."""
        from mien.models.faceapi_expression import EXPRESSIONS, FaceExpressionNet

        net = FaceExpressionNet.from_weights().to(pipe.device).eval()

        def labels(x):
            return [EXPRESSIONS[i] for i in net.predict_chip(pipe.identity.crops(x)[0]).argmax(1).tolist()]

        return cls(pipe.identity.faceapi, labels, pipe.blendshape_net, pipe.device)


# -- 1. prepare (MediaPipe) -------------------------------------------------------------------------------------


def eligible(bench, ks: list[int], per_group: int | None = None) -> list:
    """The benchmark's people with more photos than the smallest K, the first ``per_group`` of each group."""
    out, seen = [], {}
    for ident in bench.identities:
        if len(ident.identity_photos) + len(ident.scoring_photos) > min(ks):
            seen[ident.group] = seen.get(ident.group, 0) + 1
            if per_group is None or seen[ident.group] <= per_group:
                out.append(ident)
    return out


def prepare(bench, out: Path, ks: list[int], landmarker, scorer: Scorer, identity_encoder, per_group: int | None = None,
            max_photos: int | None = None, warn=print) -> list[dict]:  # fmt: skip
    """Align and measure the eligible people's photos into ``out`` (module docstring); returns people.json."""
    import tempfile

    from PIL import Image

    from mien.personalize.inputs import prepare as prepare_photos

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    people, tmp = [], Path(tempfile.mkdtemp())
    try:
        for ident in eligible(bench, ks, per_group):
            photos = [*ident.identity_photos, *ident.scoring_photos]
            photos = sorted(photos, key=lambda p: p.label != "neutral")[:max_photos]  # labelled neutral ones kept
            paths = {}
            for i, p in enumerate(photos):
                paths[str(tmp / f"{i:03d}.png")] = p
                Image.fromarray(bench.image(p)).save(tmp / f"{i:03d}.png")
            notes = []
            try:
                inputs = prepare_photos(landmarker, list(paths), identity_encoder, notes.append)
            except MienError as e:
                warn(f"{ident.id}: left out ({e})")
                continue
            if len(inputs) <= min(ks):
                warn(f"{ident.id}: left out ({len(inputs)} usable photos)")
                continue
            used = [paths[n] for n in inputs.names]
            read = scorer(inputs.crops)[1]
            neutral = [(p.label or r) == "neutral" for p, r in zip(used, read)]
            order = sorted(range(len(used)), key=lambda i: not neutral[i])  # neutral first, stable
            inputs = subset(inputs, order)
            k = len(people)
            inputs.save(tmp)
            shutil.move(tmp / "inputs.safetensors", out / f"person-{k:03d}.safetensors")
            people.append({"id": ident.id, "group": ident.group, "photos": [str(used[i]) for i in order],
                           "labels": [used[i].label for i in order], "faceapi": [read[i] for i in order],
                           "neutral": [neutral[i] for i in order],
                           "notes": [n.replace(str(tmp) + "/", "") for n in notes]})  # fmt: skip
            for f in tmp.iterdir():
                f.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (out / "people.json").write_text(json.dumps(people, indent=1) + "\n")
    return people


def subset(inputs, idx):
    from mien.personalize.inputs import PersonInputs

    idx = list(idx)
    return PersonInputs([inputs.names[i] for i in idx], [inputs.sha256[i] for i in idx], inputs.crops[idx],
                        inputs.mask[idx], inputs.features[idx], inputs.expression[idx])  # fmt: skip


def load_person(folder: Path, k: int, person: dict):
    """The k-th prepared person's :class:`mien.personalize.inputs.PersonInputs` (the arrays its ``save`` writes)."""
    from safetensors.torch import load_file

    from mien.personalize.inputs import PersonInputs

    t = {name: v.numpy() for name, v in load_file(Path(folder) / f"person-{k:03d}.safetensors").items()}
    n = len(person["photos"])
    return PersonInputs(person["photos"], [""] * n, t["crops"], t["mask"], t["features"], t["expression"])


# -- 2. run (CPU or GPU) ----------------------------------------------------------------------------------------


def jobs(people: list[dict], ks: list[int]) -> list[tuple[int, int]]:
    """(person index, K) in the order given: each K over every person with more than K photos."""
    return [(k, K) for K in ks for k, p in enumerate(people) if len(p["photos"]) > K]


def held_out_start(n: int, ks: list[int]) -> int:
    """The first held-out photo: after the largest K this person allows (the same held-out set for every K)."""
    return max(K for K in ks if K < n)


def run(prepared: Path, out: Path, ks: list[int], pipe, scorer: Scorer, config=None, settings=None,
        shard: tuple[int, int] = (0, 1), minutes: float | None = None, max_runs: int | None = None, sheets: bool = True,
        labels=LABELS, progress: bool = True) -> list[dict]:  # fmt: skip
    """Personalise, generate and score every (person, K) of ``prepared`` not yet in ``out`` (module
    docstring); returns this call's new items. ``pipe``: a :class:`mien.pipeline.MienPipeline` without a
    person loaded; ``config``: :class:`mien.personalize.PersonalizeConfig` (default: the defaults);
    ``minutes``, ``max_runs``: start no run after that long, or after that many (the rest stay for a rerun);
    ``labels``: the basic labels asked for (default all seven)."""
    from mien.personalize.config import PersonalizeConfig

    start = time.monotonic()
    prepared, out = Path(prepared), Path(out)
    people = json.loads((prepared / "people.json").read_text())
    config = config or PersonalizeConfig()
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    base = base_model(pipe.model)  # every person starts from the base model
    done = finished(out)
    todo = [j for j in jobs(people, ks)[shard[0] :: shard[1]] if f"{people[j[0]]['id']}|{j[1]}" not in done]
    name = "items.jsonl" if shard[1] == 1 else f"items-{shard[0]}.jsonl"
    new = []
    for k, K in todo[:max_runs]:
        if minutes and time.monotonic() - start > 60 * minutes:
            print(f"stopped by the time limit with {len(todo) - len(new)} runs left; run again to continue", file=sys.stderr)
            break
        item = one(pipe, base, scorer, prepared, people[k], k, K, ks, config, settings, out / "sheets" if sheets else None,
                   shard[1], labels)  # fmt: skip
        with (out / name).open("a") as f:
            f.write(json.dumps(item) + "\n")
        new.append(item)
        if progress:
            print(f"{item['person']} K={K}: trained {item['train_s']} s", file=sys.stderr, flush=True)
    else:
        if max_runs is not None and len(todo) > len(new):
            print(f"stopped after {len(new)} runs (--max-runs) with {len(todo) - len(new)} runs left; run again to "
                  "continue", file=sys.stderr)  # fmt: skip
    return new


def base_model(model):
    """A copy of ``model`` without any LoRA layer (a person loaded earlier is left out)."""
    from peft.tuners.lora import LoraLayer

    base = copy.deepcopy(model)
    for name, m in list(base.named_modules()):
        for child, sub in list(m.named_children()):
            if isinstance(sub, LoraLayer):
                setattr(m, child, sub.get_base_layer())
    for m in base.modules():
        if hasattr(m, "peft_config"):
            del m.peft_config
    return base


def one(pipe, base, scorer: Scorer, prepared: Path, person: dict, k: int, K: int, ks: list[int], config, settings,
        sheets: Path | None, processes: int, labels=LABELS) -> dict:  # fmt: skip
    """One person personalised on K photos, the seven labels generated both ways and scored."""
    import tempfile

    import torch

    from mien.expression.targets import POSE_SCALE, ExpressionRequest
    from mien.personalize import lora
    from mien.personalize.run import expression_measure, identity_nets, person_tensors
    from mien.personalize.trainer import train_person
    from mien.pipeline import AlignedPhotos
    from mien.settings import GenerationSettings

    inputs = load_person(prepared, k, person)
    train, held = subset(inputs, range(K)), subset(inputs, range(held_out_start(len(inputs), ks), len(inputs)))
    faces = [SimpleNamespace(pose=tuple(float(v) for v in e[52:] * POSE_SCALE), blendshapes=e[:52].copy())
             for e in train.expression]  # fmt: skip
    ident = pipe.identity_input(AlignedPhotos(list(train.crops), faces, [], [np.eye(2, 3)] * K, list(range(K))))
    held_desc = scorer(held.crops)[0]
    train_desc, _, train_bs = scorer(train.crops)
    with torch.no_grad():
        train_lat = pipe.taef2.encode(torch.from_numpy(train.crops).permute(0, 3, 1, 2).float().to(pipe.device) / 255).cpu()
    model = copy.deepcopy(base)
    work = Path(tempfile.mkdtemp())
    try:
        _sync(pipe.device)
        t0 = time.monotonic()
        tensors = person_tensors(train, pipe.taef2, pipe.identity, pipe.device)
        measure = expression_measure(model, pipe.taef2, pipe.blendshape_net) if config.reads_blendshapes else None
        nets = identity_nets(pipe.taef2, pipe.device) if config.losses.judge_identity else None
        res = train_person(model, tensors, config, work, base_sha256=pipe.model.sha256, expression=measure,
                           photos=[{"name": n, "sha256": ""} for n in train.names], progress=False,
                           identity_nets=nets)  # fmt: skip
        _sync(pipe.device)
        train_s = time.monotonic() - t0
        del model
        rows, images = [], {}
        for mode in ("tuning_free", "personalised"):
            if mode == "personalised":
                pipe.load_person(work)
            else:
                lora.enable(pipe.model.backbone.unet, False)
            gens = [pipe(ident, ExpressionRequest(mix={label: 1.0}), settings, n=1, seed=0) for label in labels]
            images[mode] = np.stack([g.images[0] for g in gens])
            rows += score_outputs(scorer, mode, labels, images[mode], torch.cat([g.latents for g in gens]), held_desc,
                                  train_desc, train_bs, train_lat, train.crops)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sheets is not None:
        _sheet(sheets, person, K, train.crops, images, labels)
    return {"person": person["id"], "group": person["group"], "split": "tune" if person["id"] in TUNING_PEOPLE else "report",
            "K": K, "train_photos": person["photos"][:K], "held_out": len(held), "train_neutral": all(person["neutral"][:K]),
            "steps": res.steps_done, "rank": config.rank, "train_s": round(train_s, 2), "adapter_bytes": res.adapter_bytes,
            "processes": processes, "device": _device_name(pipe.device), "loss_first": res.losses[0]["total"],
            "person_settings": {k: v for k, v in (settings or GenerationSettings()).to_dict().items() if k.startswith("person_")},
            "loss_last": res.losses[-1]["total"], "targets": list(config.targets), "rows": rows}  # fmt: skip


def score_outputs(scorer, mode, labels, imgs, lats, held_desc, train_desc, train_bs, train_lat, train_crops) -> list[dict]:
    desc, pred, bs = scorer(imgs)
    d_held = np.linalg.norm(desc[:, None] - held_desc[None], axis=-1)
    d_train = np.linalg.norm(desc[:, None] - train_desc[None], axis=-1)
    lat = np.sqrt(((lats.flatten(1)[:, None].double() - train_lat.flatten(1)[None].double()) ** 2).mean(-1).numpy())
    pix = np.sqrt(((imgs.reshape(len(imgs), 1, -1).astype(float) - train_crops.reshape(1, len(train_crops), -1)) ** 2).mean(-1))
    expr = np.linalg.norm(bs[:, None] - train_bs[None], axis=-1)
    return [{"mode": mode, "label": label, "pred": pred[i], "dist": float(np.median(d_held[i])),
             "nearest_train": float(d_train[i].min()), "nearest_train_latent": float(lat[i].min()),
             "nearest_train_pixel": float(pix[i].min()), "expression_change": float(expr[i].min())}
            for i, label in enumerate(labels)]  # fmt: skip


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else "cpu"


def _sheet(folder: Path, person: dict, K: int, train: np.ndarray, images: dict, labels) -> None:
    """A row of the train photos (3 at most), then rows of the tuning-free and the personalised outputs of the
    seven labels (for looking; the folder is never committed: only London-set faces may be)."""
    from mien.io.grid import grid

    rows = [list(train[:3]), list(images["tuning_free"]), list(images["personalised"])]
    captions = [[f"train {i}" for i in range(min(K, 3))], [f"TF {x}" for x in labels], [f"P {x}" for x in labels]]
    safe = person["id"].replace(":", "_")
    grid(rows, captions, f"{person['id']} K={K}").save(folder / f"{person['group']}_{safe}_K{K}.png")


# -- command line (the GPU machine's entry; `mien evaluate --personalize` runs all three here) -------------------


def main(argv=None) -> int:
    import argparse

    from mien.cli.settings_flags import add_setting_flags, settings_from_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="align and measure the people's photos (needs MediaPipe)")
    b = sub.add_parser("run", help="personalise, generate and score (CPU or GPU, no MediaPipe)")
    c = sub.add_parser("report", help="summary.json and summary.md of a run folder")
    for q in (a, b):
        q.add_argument("--ks", type=lambda v: [int(x) for x in v.split(",")], default=[1, 3, 5])
    a.add_argument("--benchmark")
    a.add_argument("--per-group", type=int)
    a.add_argument("--max-photos", type=int, help="photos kept per person (labelled neutral ones first)")
    a.add_argument("--people", help="comma-separated benchmark ids (default: every eligible person)")
    a.add_argument("--out", required=True)
    b.add_argument("--inputs", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--device", default="cuda")
    b.add_argument("--shard", default="0/1", help="I/N: this process's share of the runs (several share one GPU)")
    b.add_argument("--minutes", type=float, help="start no new run after this many minutes")
    b.add_argument("--max-runs", type=int, help="start at most this many runs")
    b.add_argument("--labels", default=",".join(LABELS), help="the labels asked for (default all seven)")
    b.add_argument("--lora-steps", type=int)
    b.add_argument("--lora-rank", type=int)
    b.add_argument("--identity-weight", type=float, help="weight of the identity loss (default: LossWeights')")
    b.add_argument("--expression-weight", type=float,
                   help="weight of the expression-crafting loss (default: LossWeights'; docs/personalize.md, \"Why the "
                        "personalised model is no nearer\")")
    b.add_argument("--edit-identity-weight", type=float,
                   help="weight of the identity loss at a requested expression (default: LossWeights')")
    b.add_argument("--lora-targets", help="the UNet modules the LoRA wraps (mien personalize --lora-targets; default "
                                          "attention)")
    add_setting_flags(b, "generation: ")
    c.add_argument("--out", required=True)
    c.add_argument("--split", choices=("report", "tune"), default="report",
                   help="print the report people's tables (default) or the tuning people's")
    args = p.parse_args(argv)
    try:
        if args.cmd == "prepare":
            from mien.evaluate import benchmark as bm

            bench = bm.load(args.benchmark)
            if args.people:
                keep = args.people.split(",")
                bench = dataclasses.replace(bench, identities=[i for i in bench.identities if i.id in keep])
            prepare_here(bench, args.out, args.ks, args.per_group, args.max_photos)
        elif args.cmd == "run":
            i, n = (int(x) for x in args.shard.split("/"))
            pipe = pipeline_without_landmarker(args.device)
            config = lora_config(args.lora_steps, args.lora_rank, args.identity_weight, args.expression_weight,
                                 args.edit_identity_weight, args.lora_targets)
            run(args.inputs, args.out, args.ks, pipe, Scorer.from_pipeline(pipe), config, settings_from_args(args),
                shard=(i, n), minutes=args.minutes, max_runs=args.max_runs, labels=tuple(args.labels.split(",")))  # fmt: skip
        else:
            s = report(Path(args.out))
            if args.split == "tune" and "tune" not in s:
                raise MienError(f"{args.out} holds no finished run of a tuning person")
            print(markdown(s["tune"] if args.split == "tune" else s))
    except MienError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def lora_config(steps: int | None, rank: int | None, identity_weight: float | None = None,
                expression_weight: float | None = None, edit_identity_weight: float | None = None,
                targets: str | None = None):  # fmt: skip
    """The benchmark's :class:`mien.personalize.PersonalizeConfig`: the defaults with each option given
    (``targets``: a name of :data:`mien.builtin.config.LORA_TARGET_SETS`)."""
    from mien.personalize.config import PersonalizeConfig, lora_targets

    c = PersonalizeConfig()
    if targets is not None:
        c = dataclasses.replace(c, targets=lora_targets(targets))
    weights = {"identity": identity_weight, "expression": expression_weight, "edit_identity": edit_identity_weight}
    c = dataclasses.replace(c, losses=dataclasses.replace(c.losses, **{k: v for k, v in weights.items() if v is not None}))
    if rank is not None:
        c = dataclasses.replace(c, rank=rank, alpha=float(rank))
    return dataclasses.replace(c, steps=steps) if steps is not None else c


def prepare_here(bench, out, ks, per_group=None, max_photos=None, device: str = "cpu") -> list[dict]:
    """:func:`prepare` of a :class:`mien.evaluate.benchmark.Benchmark` with MediaPipe's landmarker and the real nets."""
    from mien.face.landmarker import FaceLandmarker

    pipe = pipeline_without_landmarker(device)
    with FaceLandmarker(num_faces=2) as lm:
        return prepare(bench, Path(out), ks, lm, Scorer.from_pipeline(pipe), pipe.identity, per_group,
                       max_photos, warn=lambda m: print(f"mien: {m}", file=sys.stderr))  # fmt: skip


class _NoLandmarker:
    """Stands in for MediaPipe: the photos were aligned by :func:`prepare`."""

    def detect(self, rgb, max_faces=None):
        raise RuntimeError("no landmarker here: the inputs are prepared")

    def close(self) -> None:
        pass


def pipeline_without_landmarker(device: str):
    from mien.pipeline import MienPipeline

    return MienPipeline.from_pretrained(device=device, landmarker=_NoLandmarker())


if __name__ == "__main__":
    sys.exit(main())
