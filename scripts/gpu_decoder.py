"""One GPU call of the TAEF2 decoder fine-tune (mien.train.decoder; docs/training.md, "The decoder").

Runs on the lent machine from the repository root (exact commands in docs/training-runs/decoder/):

    python3 -m pip install -q --no-index --no-deps --target /root/run/site .whl/*.whl
    PYTHONPATH=src:/root/run/site MIEN_WEIGHTS=.carry/weights python3 scripts/gpu_decoder.py \\
        --chunks .carry/pack2/chunk-00.npz --minutes 8 --out $OUT

Each call decodes the WebP faces of the chunks it carries (cached as uint8 under --work, which survives
while the machine stays warm), trains on every chunk seen so far, resuming from the checkpoint in
--work, and writes the EMA decoder (fp16 safetensors, 1.3 MB), the loss log and a summary with the
PSNR of held-out people before and after to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mien.data.pack import read_chunk
from mien.face.align import validity_mask
from mien.models.taef2 import TAEF2
from mien.train.decoder import CHECKPOINT, DECODER_FILE, DecoderTrainConfig, finetune_decoder, psnr

HELD_OUT = 0.03  # share of each chunk's people kept out of training, for the before/after PSNR


def load_chunk(path: Path, cache: Path) -> dict[str, torch.Tensor]:
    """uint8 images (N, 3, 128, 128), validity masks (N, 1, 128, 128) and person groups of one chunk."""
    c = cache / (path.stem + ".images.pt")
    if not c.exists():
        cond, webp = read_chunk(path)
        with ThreadPoolExecutor(16) as pool:
            images = np.stack(list(pool.map(lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), webp)))
            masks = np.stack(list(pool.map(lambda i: validity_mask(cond["affine"][i], tuple(cond["src_size"][i]), 128),
                                           range(len(webp)))))
        torch.save({"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    "masks": torch.from_numpy(masks.astype(np.uint8))[:, None],
                    "group": torch.from_numpy(cond["group"].astype(np.int64))}, c)  # fmt: skip
    return torch.load(c, weights_only=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", nargs="+", type=Path, default=[])
    ap.add_argument("--work", type=Path, default=Path("/root/run"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget for this call's training")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--device", default="cuda", help="cuda on the lent machine; cpu for a local dry run")
    args = ap.parse_args()
    t0 = time.time()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # one input shape throughout
    cache, run = args.work / "decoder_cache", args.work / "decoder"
    cache.mkdir(parents=True, exist_ok=True)
    for p in args.chunks:
        load_chunk(p, cache)
    parts = [torch.load(c, weights_only=True) for c in sorted(cache.glob("*.images.pt"))]
    train_i, held_i, all_images, all_masks = [], [], [], []
    offset = 0
    for part in parts:
        groups = part["group"].unique()
        held = groups[torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))[: int(len(groups) * HELD_OUT)]]
        is_held = torch.isin(part["group"], held)
        idx = torch.arange(len(is_held)) + offset
        train_i.append(idx[~is_held])
        held_i.append(idx[is_held])
        all_images.append(part["images"])
        all_masks.append(part["masks"])
        offset += len(is_held)
    images, masks = torch.cat(all_images).to(dev), torch.cat(all_masks).to(dev)
    train_i, held_i = torch.cat(train_i).to(dev), torch.cat(held_i).to(dev)
    prep_s = time.time() - t0
    print(f"data: {len(train_i)} training faces, {len(held_i)} held out (prep {prep_s:.0f} s)", flush=True)

    pretrained = TAEF2.from_weights().to(dev).eval()
    before = psnr(pretrained, images[held_i], masks[held_i]).mean().item()
    taef2 = TAEF2.from_weights().to(dev)
    cfg = DecoderTrainConfig(lr=args.lr, batch_size=args.batch)
    budget = args.minutes * 60 - (time.time() - t0)
    result = finetune_decoder(taef2, images[train_i], masks[train_i], cfg, run, time_budget_s=budget)
    after = psnr(taef2.to(dev).eval(), images[held_i], masks[held_i]).mean().item()

    args.out.mkdir(parents=True, exist_ok=True)
    for name in (DECODER_FILE, "decoder_loss.csv"):
        shutil.copy(run / name, args.out / name)
    summary = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
               "chunks_seen": [c.name for c in sorted(cache.glob("*.images.pt"))], "train_faces": len(train_i),
               "held_out_faces": len(held_i), "held_out_psnr_masked_db": {"pretrained": round(before, 3),
                                                                          "finetuned": round(after, 3)},
               "prep_s": round(prep_s, 1), **result, "config": dataclasses.asdict(cfg),
               "checkpoint": str(run / CHECKPOINT)}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
