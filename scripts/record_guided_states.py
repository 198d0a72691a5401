"""Real guided states for the latent reader (:mod:`mien.models.latent_reader`): the states recogniser guidance
sees in edits of the train people, and what the decoded critic says of them.

    # 1. the people (CPU; faces128, face-api, MediaPipe): one small file, no dev people
    OMP_NUM_THREADS=1 python scripts/record_guided_states.py people --out people.npz --people 150
    # 2. their edits (CPU or GPU; needs only the people file, the built-in model, TAEF2's encoder, MobileFaceNet
    #    and MediaPipe's face_landmarker.task for fearful's blendshape guidance)
    OMP_NUM_THREADS=1 python scripts/record_guided_states.py record --people people.npz --out states/ [--device cuda]
        [--seeds 1] [--people-per-batch 1] [--shard 0/1] [--time-budget S]
    python scripts/train_latent_reader.py --data states/ ...

Why: the reader distilled from synthetic near-face states (``make_latent_reader_data.py``) agrees with the decoded
critic's gradient at cosine 0.20 on the states guidance really sees (docs/performance.md, "A latent critic").
These are those states: ``record`` runs edits at mien's defaults (the seven labels, each ``--seeds`` seeds in one
batch, the seeds differing per person and label) with the decoded critic, and at every recogniser-guided step
stores the step's input state ``z`` (the state ``measure_latent_reader.py`` hooks), the critic's unit embedding of
it, the person's embedding (``target``) and the gradient w.r.t. ``z`` of their cosine, computed as the step itself
computes it (the same call, in the step's precision: bfloat16 where the device has it natively), so the edits'
paths are the real ones. Also ``label`` (index into :data:`LABELS`), ``t`` (the step's flow time) and ``person``.

``people`` picks train people of faces128 (two or more crops of fill <= 0.2 first, drawn with ``--seed``, then
single crops; the first crop is the photo edited, up to three make the person:
:meth:`mien.pipeline.MienPipeline.identity_input` averages them so) and stores what
:class:`mien.pipeline.IdentityInput` needs: the edited crop's WebP bytes as faces128 holds them, its MediaPipe
blendshapes and head pose, the identity condition (face-api) and the MobileFaceNet target, both averaged over the
crops. So ``record`` needs neither face-api nor MediaPipe's
landmarker: the edit's own TAEF2 encode of the crop gives the latent.

``--people-per-batch P`` edits P people in one batch (one label at a time: the labels' settings differ), P x
``--seeds`` rows per sampler step, each row with its own person's inputs (:class:`mien.pipeline.MienPipeline` takes a
list of people), so a step's fixed cost (a GPU's kernel launches) is shared; it records what P = 1 records, in the
same order, up to float rounding. Blocks are then at least P people.

Output is incremental: one ``part-NNNNN.safetensors`` per ``--block`` people, written whole (a temporary name,
then renamed), so a killed run loses at most the block under way and a rerun skips the blocks on disk.
``--shard i/k`` takes the blocks b with b % k == i (several processes on one GPU); ``--time-budget`` (seconds from
the start, loading included) stops before a block that would not finish in time (from the slowest block so far).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
PHOTOS = 3  # crops that make a person (select_people.py's cap for the paired run)


# -- people -----------------------------------------------------------------------------------------------------
def pick_people(samples, people: int, seed: int) -> list[list[str]]:
    """Crop keys of ``people`` train people, up to :data:`PHOTOS` crops each, the first the photo edited:
    identities with two or more crops of fill <= 0.2 first, then (when more are asked for) single crops, an
    unlabelled UTKFace crop counting as its own person; ``samples``: faces128 manifest rows
    (:class:`mien.data.faces128.Sample`). Dev people never: the reader is measured on them."""
    by_id = defaultdict(list)
    for s in samples:
        if s.split == "train" and s.fill <= 0.2:
            by_id[s.identity or s.key].append(s.key)
    rng = random.Random(seed)
    several = sorted(i for i, v in by_id.items() if len(v) >= 2)
    single = sorted(i for i, v in by_id.items() if len(v) == 1)
    rng.shuffle(several)
    chosen = [rng.sample(sorted(by_id[i]), min(PHOTOS, len(by_id[i]))) for i in several[:people]]
    rng.shuffle(single)
    return chosen + [by_id[i] for i in single[: people - len(chosen)]]


def make_people(args) -> None:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from mien.data.faces128 import Faces128
    from mien.face.landmarker import FaceLandmarker
    from mien.models.identity import IdentityEncoder

    data = Faces128(args.data)
    chosen = pick_people(data.samples, args.people, args.seed)
    identity = IdentityEncoder.from_weights()
    out = defaultdict(list)
    with FaceLandmarker() as landmarker, torch.no_grad():
        for keys in tqdm(chosen, unit="person", desc="people"):
            crops = [data.image(k) for k in keys]
            faces = landmarker.detect(crops[0])
            if not faces:  # MediaPipe finds no face in the edited crop: the pipeline would not edit it either
                continue
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
            out["key"].append(keys[0])
            out["identity"].append(data.sample(keys[0]).identity or keys[0])
            out["webp"].append(np.frombuffer(data.image_bytes(keys[0]), np.uint8))
            out["blendshapes"].append(np.asarray(faces[0].blendshapes, np.float32))
            out["pose"].append(np.asarray(faces[0].pose, np.float32))
            # float16, as faces128's packs hold identity vectors: the file travels to the GPU beside the weights
            out["vector"].append(F.normalize(identity.condition(x).mean(0), dim=0).half().numpy())
            out["embedding"].append(F.normalize(identity.mobilefacenet_unit(x).mean(0), dim=0).half().numpy())
    webp = out.pop("webp")
    offsets = np.cumsum([0] + [len(w) for w in webp])
    arrays = {k: np.stack(v) if k not in ("key", "identity") else np.asarray(v) for k, v in out.items()}
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(tmp, webp=np.concatenate(webp), offsets=offsets, **arrays)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(out['key'])} people, {args.out.stat().st_size / 1e6:.1f} MB", flush=True)


def load_people(path) -> list[dict]:
    """The people file as one dict per person (``crop``: the decoded RGB uint8 crop)."""
    from PIL import Image

    d = np.load(path)
    off = d["offsets"]
    rows = []
    for i in range(len(d["key"])):
        crop = np.asarray(Image.open(io.BytesIO(d["webp"][off[i]: off[i + 1]].tobytes())).convert("RGB"))
        fields = ("key", "identity", "blendshapes", "pose", "vector", "embedding")
        rows.append({"crop": crop, **{k: d[k][i] for k in fields}})
    return rows


# -- record -----------------------------------------------------------------------------------------------------
def recording_pipeline(device: str):
    """The built-in model's pipeline without face-api's weights or MediaPipe's landmarker: the people file holds
    the identity conditions and the blendshapes, so only TAEF2, MobileFaceNet (the critic) and MediaPipe's
    blendshape nets (fearful's guidance) are read. The face-api net is left untrained: nothing calls it."""
    import torch

    from mien.builtin.model import MienModel
    from mien.models.faceapi_recognition import FaceRecognitionNet
    from mien.models.identity import IdentityEncoder
    from mien.models.mobilefacenet import MobileFaceNet
    from mien.models.taef2 import TAEF2
    from mien.pipeline import MienPipeline, default_model_dir

    dev = torch.device(device)
    model = MienModel.from_pretrained(default_model_dir()).to(dev).eval()
    taef2 = TAEF2.from_weights(decoder_path=model.decoder_path).to(dev).eval()
    identity = IdentityEncoder(FaceRecognitionNet(), MobileFaceNet.from_weights()).eval().requires_grad_(False).to(dev)
    return MienPipeline(model, taef2, identity, None, default_model_dir(), dev)


def identity_input(pipe, person: dict):
    """:class:`mien.pipeline.IdentityInput` of a people-file row, as :meth:`MienPipeline.identity_input` makes it."""
    import torch

    from mien.pipeline import IdentityInput

    x = torch.from_numpy(person["crop"][None].copy()).permute(0, 3, 1, 2).float().to(pipe.device)
    with torch.no_grad():
        latent = pipe.taef2.encode(x / 255)[0]
    vec = torch.from_numpy(person["vector"]).float().to(pipe.device)
    emb = torch.from_numpy(person["embedding"]).float().to(pipe.device)
    return IdentityInput([person["crop"]], vec, person["pose"], person["blendshapes"], [], latent, emb)


class Recorder:
    """While active, every :class:`RecogniserGuide` step keeps its state, the critic's embedding of it, the target and
    the step's own gradient: the step runs as in mien, once (:meth:`GradientGuide.gradient`), with the guide's
    ``embed`` (and ``late_embed``, which the hybrid critic's late steps read) wrapped for that call to keep the
    embedding it computes (``measure_latent_reader.py`` hooks the same method). A subclass records another guide by
    naming it (:meth:`guide_class`), the guide's critic attribute (``critic``), the key its reading is kept under
    (``value``) and the gradient's dtype (``record_blendshape_states.py``)."""

    critic, value, gradient_dtype = "embed", "embedding", "float16"

    def __init__(self):
        self.rows = defaultdict(list)
        self.label, self.person, self.t = 0, 0, 0.0  # person: one index, or one per row of the batch

    @staticmethod
    def guide_class():
        from mien.guidance.recogniser import RecogniserGuide

        return RecogniserGuide

    def __enter__(self) -> "Recorder":
        self._class = self.guide_class()
        self._original = self._class.gradient
        gradient, recorder, attr = self._original, self, self.critic

        def kept_gradient(guide, z, precision, score=None):
            # the early and the late critic are both wrapped: the step's score reads one of them
            critics = {a: getattr(guide, a) for a in (attr, f"late_{attr}") if getattr(guide, a, None) is not None}
            seen = []

            def keeping(critic):
                def kept(zz):
                    e = critic(zz)
                    seen.append(e.detach().float())
                    return e

                return kept

            for a, critic in critics.items():
                setattr(guide, a, keeping(critic))
            try:
                g = gradient(guide, z, precision, score)
            finally:
                for a, critic in critics.items():
                    setattr(guide, a, critic)
            recorder.keep(z.detach(), seen[-1], guide.target.clone().float().expand(len(z), -1), g)
            return g

        self._class.gradient = kept_gradient
        return self

    def __exit__(self, *exc) -> None:
        self._class.gradient = self._original

    def keep(self, z, e, target, g) -> None:
        ok = np.isfinite(g.flatten(1).sum(1).cpu().numpy())  # a non-finite bfloat16 step is retaken in float32
        if not ok.any():
            return
        n = int(ok.sum())
        import torch

        gradient = g.to(getattr(torch, self.gradient_dtype))
        for k, v in (("z", z), (self.value, e), ("target", target), ("gradient", gradient)):
            self.rows[k].append(v[ok].cpu())
        self.rows["label"].append(torch.full((n,), self.label, dtype=torch.int8))
        person = torch.as_tensor(self.person, dtype=torch.int32).expand(len(ok))
        self.rows["person"].append(person[torch.from_numpy(ok)].clone())
        self.rows["t"].append(torch.full((n,), self.t, dtype=torch.float32))

    def step(self, t: float) -> None:
        self.t = t

    def take(self) -> dict:
        """The states kept so far, person after person (a batch of several people keeps them step by step)."""
        import torch

        rows, self.rows = self.rows, defaultdict(list)
        out = {k: torch.cat(v) for k, v in rows.items()}
        if not out:
            return out
        order = torch.argsort(out["person"], stable=True)
        return {k: v[order].contiguous() for k, v in out.items()}


def blocks_todo(n_people: int, block: int, shard: tuple[int, int], out: Path) -> list[int]:
    """This shard's blocks (b % k == i) that have no part file yet."""
    i, k = shard
    return [b for b in range(-(-n_people // block)) if b % k == i and not part_path(out, b).exists()]


def part_path(out: Path, b: int) -> Path:
    return out / f"part-{b:05d}.safetensors"


def write_part(path: Path, tensors: dict) -> None:
    """One block's states, whole or not at all (a temporary name, then renamed)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def record(args) -> None:
    import torch
    from tqdm import tqdm

    from mien.expression.targets import parse_request
    from mien.settings import GenerationSettings

    t0, slowest = time.monotonic(), 0.0  # --time-budget counts the loading too
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    people = load_people(args.people)[: args.limit]
    args.block = max(args.block, args.people_per_batch)
    todo = blocks_todo(len(people), args.block, args.shard, args.out)
    pipe = recording_pipeline(args.device)
    # the decoded critic on every guided step: its embeddings and gradients are the reader's targets (the default,
    # the hybrid critic, would record the reader's own on the early steps)
    settings = GenerationSettings(critic_precision=args.critic_precision, recogniser_critic="decoded")
    bar = tqdm(total=sum(len(people[b * args.block: (b + 1) * args.block]) for b in todo), unit="person",
               desc=f"recording {args.shard[0]}/{args.shard[1]}")  # fmt: skip
    with Recorder() as rec:
        for b in todo:
            if args.time_budget and time.monotonic() - t0 + slowest > args.time_budget:
                print(f"stopping: the next block would pass --time-budget {args.time_budget} s", flush=True)
                break
            start = time.monotonic()
            block = range(b * args.block, min((b + 1) * args.block, len(people)))
            for g in range(0, len(block), args.people_per_batch):
                group = block[g: g + args.people_per_batch]
                subjects = [identity_input(pipe, people[p]) for p in group]
                rec.person = torch.tensor(group, dtype=torch.int32).repeat_interleave(args.seeds)
                for li, label in enumerate(LABELS):
                    rec.label = li
                    seeds = [args.seed * 1_000_000 + (p * len(LABELS) + li) * args.seeds for p in group]
                    pipe(subjects, parse_request(label), settings, n=args.seeds, seed=seeds,
                         callback=lambda step, total, info: rec.step(float(info["t"])))  # fmt: skip
                bar.update(len(group))
            write_part(part_path(args.out, b), rec.take())
            slowest = max(slowest, time.monotonic() - start)
    bar.close()
    parts = sorted(args.out.glob("part-*.safetensors"))
    print(f"{len(parts)} part files in {args.out}, {time.monotonic() - t0:.0f} s", flush=True)


def shard(text: str) -> tuple[int, int]:
    i, k = (int(v) for v in text.split("/"))
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"--shard {text}: give i/k with 0 <= i < k")
    return i, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("people", help="pick train people of faces128 and write what their edits need")
    p.add_argument("--out", type=Path, required=True, help="the people file (.npz)")
    p.add_argument("--people", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="faces128 folder (default: $MIEN_DATA or ../shared)")
    r = sub.add_parser("record", help="edit the people and store every recogniser-guided step's state and targets")
    r.add_argument("--people", type=Path, required=True, help="a file of the people command")
    r.add_argument("--out", type=Path, required=True, help="folder of part files (created; a rerun resumes)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--seeds", type=int, default=1, help="seeds per person and label, one batch")
    r.add_argument("--people-per-batch", type=int, default=1, help="people edited in one batch, --seeds rows each")
    r.add_argument("--block", type=int, default=8, help="people per part file (at least --people-per-batch)")
    r.add_argument("--critic-precision", choices=("float32", "bfloat16"), default=None,
                   help="the critic step's number format (default: mien's, by the device)")
    r.add_argument("--shard", type=shard, default=(0, 1), help="i/k: this process's blocks of k")
    r.add_argument("--limit", type=int, default=None, help="only the first N people")
    r.add_argument("--time-budget", type=float, default=None, help="seconds; stop before a block that would pass it")
    r.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    make_people(args) if args.command == "people" else record(args)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
