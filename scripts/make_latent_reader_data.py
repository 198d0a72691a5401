"""Training data for the latent reader (:mod:`mien.models.latent_reader`): latents near the train people's
faces and what the decoded critic says of them.

    OMP_NUM_THREADS=1 python scripts/make_latent_reader_data.py --out DATA.safetensors [--people 1500]
        [--split train|dev] [--precision float32|bfloat16]

For each of ``--people`` identities of ``--split`` of ../shared/data/faces128 (two crops each, fill <= 0.2,
the sources with identity labels; fewer where fewer have two) the crops are TAEF2-encoded and normalised as the model's FlowEdit source is
(``model.normalize``), and four states are made from the first crop ``a`` (the second ``b``, another
person's ``c``), standing in for the guided steps' mid-edit clean states: ``a``; ``a`` plus Gaussian noise
(half the time low-frequency, 4 x 4 upsampled), RMS 0.05-0.4; ``a`` towards ``b`` (the same person in
another photo: pose and expression move) by 0.2-0.8 plus noise up to 0.15; ``a`` towards ``c`` by 0.1-0.5.
For each state it stores the true critic's unit MobileFaceNet embedding of the decoded face
(:func:`mien.guidance.recogniser.latent_embedder`, in ``--precision``: bfloat16 is what guidance runs on CPUs
with native bfloat16, 0.98 gradient cosine to float32's) and the gradient w.r.t. the state of its cosine
to the person's embedding (``a``'s crop read by MobileFaceNet, as guidance reads the identity photos): the
direction recogniser guidance steps along. Writes ``z`` (N, 32, 16, 16), ``embedding``, ``target`` (N, 192)
and ``gradient`` (N, 32, 16, 16, float16) to one safetensors file.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from pathlib import Path

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces128"


def pick(data, people: int, seed: int, split: str = "train") -> list[tuple[str, str]]:
    """(key of a, key of b) for ``people`` identities of ``split`` with two crops of fill <= 0.2 (``data``: a
    :class:`mien.data.faces128.Faces128`)."""
    by_id = defaultdict(list)
    for r in data.samples:
        if r.split == split and r.identity is not None and r.fill <= 0.2:
            by_id[r.identity].append(r.key)
    rng = random.Random(seed)
    ids = sorted(i for i, v in by_id.items() if len(v) >= 2)
    rng.shuffle(ids)
    return [tuple(rng.sample(by_id[i], 2)) for i in ids[:people]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--people", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", help="faces128 split: train (to train on) or dev (to measure)")
    ap.add_argument("--precision", default="float32", help="the critic's number format (float32 or bfloat16)")
    args = ap.parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from mien.data.faces128 import Faces128
    from mien.guidance.recogniser import latent_embedder
    from mien.pipeline import MienPipeline

    torch.manual_seed(args.seed)
    data = Faces128(FACES)
    trios = pick(data, args.people, args.seed, args.split)
    crops = {k: data.image(k) for pair in trios for k in pair}
    print(f"{len(trios)} people, {len(crops)} crops read", flush=True)
    pipe = MienPipeline.from_pretrained(landmarker=False)
    model, taef2, identity = pipe.model, pipe.taef2, pipe.identity
    embed = latent_embedder(model, taef2, identity)

    def rgb(keys):
        return torch.from_numpy(np.stack([crops[k] for k in keys])).permute(0, 3, 1, 2).float() / 255

    out = {"z": [], "embedding": [], "target": [], "gradient": []}
    t0 = time.monotonic()
    for i in range(0, len(trios), args.batch):
        part = trios[i: i + args.batch]
        n = len(part)
        with torch.no_grad():
            a = model.normalize(taef2.encode(rgb([t[0] for t in part])))
            b = model.normalize(taef2.encode(rgb([t[1] for t in part])))
            target = identity.mobilefacenet_unit(rgb([t[0] for t in part]) * 255)
        c = a.roll(1, 0)  # another person of the batch
        u = lambda lo, hi: torch.empty(n, 1, 1, 1).uniform_(lo, hi)  # noqa: E731
        white = torch.randn_like(a)
        low = F.interpolate(torch.randn(n, a.shape[1], 4, 4), size=a.shape[-2:], mode="bilinear")
        low = low / low.pow(2).mean((1, 2, 3), keepdim=True).sqrt()
        noise = torch.where(torch.rand(n, 1, 1, 1) < 0.5, white, low)
        states = torch.cat([a, a + u(0.05, 0.4) * noise, torch.lerp(a, b, u(0.2, 0.8)) + u(0, 0.15) * white.roll(1, 1),
                            torch.lerp(a, c, u(0.1, 0.5))])  # fmt: skip
        targets = target.repeat(4, 1)
        z = states.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            e = embed(z).float()
        (g,) = torch.autograd.grad((e * targets).sum(), z)
        for k, v in (("z", states), ("embedding", e.detach()), ("target", targets), ("gradient", g.half())):
            out[k].append(v)
        done = min(i + args.batch, len(trios))
        print(f"{done}/{len(trios)} people, {time.monotonic() - t0:.0f} s", flush=True)
    save_file({k: torch.cat(v).contiguous() for k, v in out.items()}, args.out)
    print(f"wrote {args.out}: {sum(len(v) for v in out['z'])} states", flush=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
