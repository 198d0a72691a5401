"""Annotated images for `mien analyze --out`: landmarks, box, top expression, top blendshapes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def annotate(rgb: np.ndarray, faces) -> Image.Image:
    im = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    scale = max(1.0, max(im.size) / 512)
    font = ImageFont.load_default(size=int(12 * scale))
    r = max(1, int(scale))
    for face in faces:
        x0, y0, x1, y1 = face.box
        draw.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=max(1, int(2 * scale)))
        for x, y in face.landmarks[:, :2]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 255))
        top = max(face.expression, key=face.expression.get)
        bs = sorted(face.blendshapes.items(), key=lambda kv: -kv[1])[:3]
        lines = [f"{top} {face.expression[top]:.2f}"] + [f"{k} {v:.2f}" for k, v in bs]
        ty = max(0.0, y0 - len(lines) * 14 * scale - 2)
        for i, line in enumerate(lines):
            pos = (x0, ty + i * 14 * scale)
            draw.text(pos, line, fill=(255, 255, 0), font=font, stroke_width=max(1, int(scale)), stroke_fill=(0, 0, 0))
    return im
