"""TAEF2 reconstruction PSNR on the dev faces, pretrained decoder against the built-in model's own.

    python scripts/decoder_psnr.py [--model default|FOLDER] [--json OUT]

Every dev face of ../shared/data/faces128 (or $MIEN_DATA) is encoded with the pretrained TAEF2 encoder
and decoded with each decoder; PSNR per image as in tests/test_taef2.py (output rounded to 8 bits),
over the whole crop and over its real pixels only (the fill region excluded), averaged per source.
Issue 5 expects >= 34 dB on dev faces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mien.data.faces128 import Faces128
from mien.models.taef2 import TAEF2
from mien.train.decoder import psnr


def dev_faces() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sources, uint8 images (N, 3, 128, 128) and validity masks (N, 1, 128, 128) of every dev face, in
    manifest (key) order."""
    pool = Faces128(split="dev")
    keys, images, masks = [], [], []
    for sample, image in pool:
        keys.append(sample.source)
        images.append(image)
        masks.append(pool.mask(sample))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return keys, x, torch.from_numpy(np.stack(masks).astype(np.uint8))[:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="built-in model folder ('default': the shipped one)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    from mien.builtin.model import MienModel
    from mien.pipeline import default_model_dir

    folder = default_model_dir() if args.model == "default" else Path(args.model)
    decoder = MienModel.from_pretrained(folder).decoder_path
    keys, images, masks = dev_faces()
    sources = np.array(keys)
    result = {"faces": len(keys), "model": str(folder), "decoder": str(decoder)}
    torch.set_grad_enabled(False)
    for name, path in (("pretrained", None), ("model", decoder)):
        if name == "model" and path is None:
            continue
        taef2 = TAEF2.from_weights(decoder_path=path).eval()
        row = {}
        for region, m in (("whole", None), ("real_pixels", masks)):
            p = psnr(taef2, images, m).numpy()
            row[region] = {"mean": round(float(p.mean()), 2),
                           **{s: round(float(p[sources == s].mean()), 2) for s in sorted(set(sources))}}
        result[name] = row
        print(name, json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
