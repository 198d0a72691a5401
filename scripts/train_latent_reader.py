"""Distil the latent reader (:mod:`mien.models.latent_reader`) from the decoded critic.

    OMP_NUM_THREADS=1 python scripts/make_latent_reader_data.py --out states.safetensors --precision bfloat16
    OMP_NUM_THREADS=1 python scripts/train_latent_reader.py --data states.safetensors [more.safetensors ...]
        [--held dev_states.safetensors] --out latent_reader.safetensors

The loss per state is ``1 - cos(reader(z), critic embedding)`` plus ``grad_weight`` times ``1 - cos`` between
the reader's and the decoded critic's gradients w.r.t. z of the cosine to the person's embedding (recogniser
guidance steps along that gradient normalised, so only its direction counts). The states of ``--held`` (dev
people: ``make_latent_reader_data.py --split dev``), else the last ``--holdout`` share of the states (whole
batches of people), are reported after each epoch; the weights are saved as
float16 with the config in the file's metadata, and the file's SHA256 beside it (``OUT.sha256``, sha256sum format:
what mien checks a rebuilt reader against; put both under a weights folder as ``mien/latent_reader.safetensors``).
Prints one JSON line per epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def losses(reader, z, embedding, target, gradient, create_graph: bool = True):
    """(embedding cosines, gradient cosines), each (B,): the reader against the decoded critic."""
    import torch
    import torch.nn.functional as F

    z = z.clone().requires_grad_(True)
    e = reader(z)
    (g,) = torch.autograd.grad((e * target).sum(), z, create_graph=create_graph)
    return (e * embedding).sum(1), F.cosine_similarity(g.flatten(1), gradient.flatten(1).float(), dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="states files to train on")
    ap.add_argument("--held", type=Path, default=None, help="states file to report on (default: the --holdout share)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--grad-weight", type=float, default=1.0)
    ap.add_argument("--holdout", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from safetensors.torch import load_file

    from mien.models.latent_reader import LatentReader

    torch.manual_seed(args.seed)
    names = ("z", "embedding", "target", "gradient")
    parts = [load_file(p) for p in args.data]
    data = {k: torch.cat([q[k] for q in parts]) for k in names}
    n = len(data["z"])
    cut = n if args.held else n - int(n * args.holdout) // 32 * 32
    train = {k: data[k][:cut] for k in names}
    held = load_file(args.held) if args.held else {k: data[k][cut:] for k in names}
    reader = LatentReader()
    opt = torch.optim.AdamW(reader.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(cut / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.05)
    t0 = time.monotonic()
    for epoch in range(args.epochs):
        reader.train()
        order = torch.randperm(cut)
        total = 0.0
        for i in range(0, cut, args.batch):
            idx = order[i: i + args.batch]
            ce, cg = losses(reader, *(train[k][idx] for k in names))
            loss = (1 - ce).mean() + args.grad_weight * (1 - cg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        reader.eval()
        ce, cg = losses(reader, *(held[k] for k in names), create_graph=False)
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(total / cut, 4),
                          "held_embedding_cos": round(ce.mean().item(), 4), "held_gradient_cos": round(cg.mean().item(), 4),
                          "seconds": round(time.monotonic() - t0)}), flush=True)  # fmt: skip
    digest = reader.save(args.out)
    print(f"wrote {args.out} and {args.out}.sha256 ({digest})", flush=True)


if __name__ == "__main__":
    main()
