"""Writing generated images: PNGs that carry their request, seed and model hash (and the watermark: every
image goes through :func:`mien.io.provenance.save_image`), plus a contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mien.io.provenance import COMPOSITE, save_image


def save_result(out: Path, result) -> list[Path]:
    """``out/NNN_seedS.png`` per image of an :class:`mien.edit.EditResult` (its metadata in the PNG text
    chunk ``mien``, with mien's version), ``out/NNN_seedS_photo.png`` per pasted photo (the face put back
    into the identity photo), and ``out/sheet.png``; all with the watermark."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = len(list(out.glob("*_seed*.png")))  # never overwrite earlier results in the same folder
    gen, paths = result.generation, []
    for i, (img, seed, meta) in enumerate(zip(result.crops, gen.seeds, result.metadata)):
        p = out / f"{start + i:03d}_seed{seed}.png"
        paths.append(save_image(p, img, meta))
        if result.photos is not None:
            q = out / f"{start + i:03d}_seed{seed}_photo.png"
            paths.append(save_image(q, result.photos[i], meta, source=COMPOSITE))
    crops, labels = [result.subject.identity.crops[0]], ["identity"]
    if getattr(result, "scene", None) is not None:  # a swap: the scene face beside the identity
        crops, labels = crops + [result.scene.identity.crops[0]], labels + ["scene"]
    sheet = contact_sheet(crops + result.crops, labels + [f"seed {s}" for s in gen.seeds], gen.request)
    sheet_meta = {k: v for k, v in result.metadata[0].items() if k != "seed"}
    paths.append(save_image(out / "sheet.png", np.asarray(sheet), sheet_meta, source=COMPOSITE))
    return paths


def contact_sheet(images: list[np.ndarray], labels: list[str], title: str = "") -> Image.Image:
    size, pad, head = 128, 4, 16
    w = len(images) * (size + pad) + pad
    sheet = Image.new("RGB", (w, size + 2 * head + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 2), title[:120], fill=(0, 0, 0))
    for i, (img, label) in enumerate(zip(images, labels)):
        x = pad + i * (size + pad)
        sheet.paste(Image.fromarray(img).resize((size, size)), (x, head))
        draw.text((x, head + size + 2), label, fill=(0, 0, 0))
    return sheet
