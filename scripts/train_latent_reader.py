"""Distil the latent reader (:mod:`mien.models.latent_reader`) from the decoded critic.

    OMP_NUM_THREADS=1 python scripts/make_latent_reader_data.py --out states.safetensors --precision bfloat16
    OMP_NUM_THREADS=1 python scripts/record_guided_states.py record --people people.npz --out real/
    OMP_NUM_THREADS=1 python scripts/train_latent_reader.py --data states.safetensors real/ [more ...]
        [--held dev_states.safetensors] --out latent_reader.safetensors [--width 64 --deep-width 128 --blocks 2]
        [--face-only] [--device cuda] [--time-budget S]

``--data`` takes states files and folders of them (every ``*.safetensors`` inside: ``record_guided_states.py``'s
part files). The loss per state is ``1 - cos(reader(z), critic embedding)`` plus ``grad_weight`` times ``1 - cos``
between the reader's and the decoded critic's gradients w.r.t. z of the cosine to the person's embedding
(recogniser guidance steps along that gradient normalised, so only its direction counts); ``--face-only`` takes that
cosine inside the face box the guided step may move (:func:`mien.regions.edit_region` at the default keep: the step
zeroes the rest, and ``measure_latent_reader.py``'s figure is that cosine). The states of ``--held`` (dev people:
``make_latent_reader_data.py --split dev``), else the last ``--holdout`` share of the states (whole batches of
people), are reported after each epoch, over the whole latent and in the face box. The learning rate follows a one-
cycle schedule (warm-up 5 %, cosine down) over ``--epochs``, or, with ``--time-budget``, over that many seconds from
the start (loading included), stopping there. The weights are saved as float16 with the config in the file's
metadata, and the file's SHA256 beside it (``OUT.sha256``, sha256sum format: what mien checks a rebuilt reader
against; put both under a weights folder as ``mien/latent_reader.safetensors``). Prints one JSON line per epoch.

``--blendshapes`` trains the blendshape reader instead (52 sigmoid outputs, ``unit=0``) on
``record_blendshape_states.py``'s part files: the loss per state is ``--value-weight`` times the squared error of the
51 blendshapes guidance reads (``_neutral`` left out) plus ``grad_weight`` times ``1 - cos`` between the reader's
and the decoded critic's gradients w.r.t. z of blendshape guidance's closeness (minus the squared distance to the
target); put the file under a weights folder as ``mien/blendshape_reader.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

NAMES = ("z", "embedding", "target", "gradient")
BLENDSHAPE_NAMES = ("z", "blendshapes", "target", "gradient")  # record_blendshape_states.py's part files


def blendshape_losses(reader, z, blendshapes, target, gradient, region=None, create_graph: bool = True):
    """(squared errors of the 51 guided blendshapes, gradient cosines), each (B,): the blendshape reader against the
    decoded critic; the gradient is that of blendshape guidance's closeness (mien.guidance.blendshape)."""
    import torch
    import torch.nn.functional as F

    z = z.float().clone().requires_grad_(True)
    b = reader(z)
    closeness = -(b - target)[:, 1:].pow(2).sum(1)
    (g,) = torch.autograd.grad(closeness.sum(), z, create_graph=create_graph)
    gradient = gradient.float()
    if region is not None:
        g, gradient = g * region, gradient * region
    return (b - blendshapes)[:, 1:].pow(2).sum(1), F.cosine_similarity(g.flatten(1), gradient.flatten(1), dim=1)


def losses(reader, z, embedding, target, gradient, region=None, create_graph: bool = True):
    """(embedding cosines, gradient cosines), each (B,): the reader against the decoded critic; ``region``
    (1, 1, H, W) weights both gradients before their cosine."""
    import torch
    import torch.nn.functional as F

    z = z.float().clone().requires_grad_(True)
    e = reader(z)
    (g,) = torch.autograd.grad((e * target).sum(), z, create_graph=create_graph)
    gradient = gradient.float()
    if region is not None:
        g, gradient = g * region, gradient * region
    return (e * embedding).sum(1), F.cosine_similarity(g.flatten(1), gradient.flatten(1), dim=1)


def one_cycle(frac: float, lr: float, warm: float = 0.05) -> float:
    """torch's OneCycleLR (cosine, defaults) at fraction ``frac`` of training: lr/25 up to lr over ``warm``, then
    down to lr/25e4."""
    lo, hi, end = lr / 25, lr, lr / 25e4
    if frac < warm:
        return hi + (lo - hi) * (1 + math.cos(math.pi * frac / warm)) / 2
    return end + (hi - end) * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm)))) / 2


def states_files(paths: list[Path]) -> list[Path]:
    """The files named, and every ``*.safetensors`` in the folders named, in order."""
    out = []
    for p in paths:
        out += sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not out:
        raise SystemExit(f"no states files in {', '.join(map(str, paths))}")
    return out


def load_states(paths: list[Path], names=NAMES) -> dict:
    import torch
    from safetensors.torch import load_file

    parts = [load_file(p) for p in states_files(paths)]
    return {k: torch.cat([q[k] for q in parts]) for k in names}


def evaluate(reader, held: dict, region, device, batch: int = 256, blendshapes: bool = False) -> dict:
    """Mean embedding cosine (the blendshape reader: squared error) and gradient cosines (whole latent, face box)
    over ``held``."""
    import torch

    if not len(held["z"]):
        return {}
    names, fn = (BLENDSHAPE_NAMES, blendshape_losses) if blendshapes else (NAMES, losses)
    sums = torch.zeros(3)
    for i in range(0, len(held["z"]), batch):
        part = [held[k][i: i + batch].to(device) for k in names]
        ce, cg = fn(reader, *part, create_graph=False)
        _, cf = fn(reader, *part, region=region, create_graph=False)
        sums += torch.stack([ce.sum(), cg.sum(), cf.sum()]).detach().cpu()
    ce, cg, cf = (sums / len(held["z"])).tolist()
    return {"held_blendshape_sq_error" if blendshapes else "held_embedding_cos": round(ce, 4),
            "held_gradient_cos": round(cg, 4), "held_gradient_face_cos": round(cf, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="states files or folders of them to train on")
    ap.add_argument("--held", type=Path, nargs="+", default=None,
                    help="states to report on (default: the --holdout share)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds from the start, loading included: the schedule's length")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--grad-weight", type=float, default=1.0)
    ap.add_argument("--blendshapes", action="store_true",
                    help="train the blendshape reader on record_blendshape_states.py's files (module docstring)")
    ap.add_argument("--value-weight", type=float, default=1.0, help="--blendshapes: the squared error's weight")
    ap.add_argument("--face-only", action="store_true", help="the gradient cosine inside the face box only")
    ap.add_argument("--holdout", type=float, default=0.05)
    ap.add_argument("--width", type=int, default=None, help="channels at 16 x 16 (LatentReaderConfig.width)")
    ap.add_argument("--deep-width", type=int, default=None, help="channels at 8 x 8 and 4 x 4")
    ap.add_argument("--blocks", type=int, default=None, help="residual blocks at 16 x 16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from mien.models.latent_reader import LatentReader, LatentReaderConfig
    from mien.regions import edit_region

    t0 = time.monotonic()  # --time-budget counts the loading too
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    names = BLENDSHAPE_NAMES if args.blendshapes else NAMES
    data = load_states(args.data, names)
    n = len(data["z"])
    cut = n if args.held else n - int(n * args.holdout) // 32 * 32
    train = {k: data[k][:cut].to(dev) for k in names}
    held = load_states(args.held, names) if args.held else {k: data[k][cut:] for k in names}
    sizes = {k: getattr(args, k) for k in ("width", "deep_width", "blocks") if getattr(args, k) is not None}
    if args.blendshapes:  # MediaPipe's 52 scores, each through a sigmoid
        sizes.update(embedding=train["blendshapes"].shape[1], unit=0)
    reader = LatentReader(LatentReaderConfig(**sizes)).to(dev)
    region = edit_region("background", dev)  # the face box guidance moves, at the default keep
    train_region = region if args.face_only else None
    opt = torch.optim.AdamW(reader.parameters(), lr=args.lr, weight_decay=1e-4)
    steps, step = args.epochs * math.ceil(cut / args.batch), 0
    size = sum(p.numel() for p in reader.parameters())
    head = {"train_states": cut, "held_states": len(held["z"]), "parameters": size, **vars(args)}
    print(json.dumps(head, default=str), flush=True)
    epoch = 0
    while epoch < args.epochs or args.time_budget:
        reader.train()
        order = torch.randperm(cut, device=dev)
        total, seen = 0.0, 0
        for i in range(0, cut, args.batch):
            frac = (time.monotonic() - t0) / args.time_budget if args.time_budget else step / steps
            if frac >= 1:
                break
            for g in opt.param_groups:
                g["lr"] = one_cycle(frac, args.lr)
            idx = order[i: i + args.batch]
            if args.blendshapes:
                err, cg = blendshape_losses(reader, *(train[k][idx] for k in names), region=train_region)
                loss = args.value_weight * err.mean() + args.grad_weight * (1 - cg).mean()
            else:
                ce, cg = losses(reader, *(train[k][idx] for k in names), region=train_region)
                loss = (1 - ce).mean() + args.grad_weight * (1 - cg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        epoch += 1
        reader.eval()
        loss = round(total / seen, 4) if seen else None
        print(json.dumps({"epoch": epoch, "train_loss": loss, **evaluate(reader, held, region, dev, blendshapes=args.blendshapes),
                          "seconds": round(time.monotonic() - t0)}), flush=True)  # fmt: skip
        if seen < cut:  # the time budget ended inside this epoch
            break
    digest = reader.cpu().save(args.out)
    print(f"wrote {args.out} and {args.out}.sha256 ({digest})", flush=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
