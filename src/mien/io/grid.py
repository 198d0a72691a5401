"""The one contact-sheet layout: images in rows on white, a caption under each and a wrapped title above.

`mien generate`'s ``sheet.png`` (:func:`mien.io.output.save_sheet`), the personalisation sheets
(:mod:`mien.evaluate.personalize`) and the scripts' sheets (gallery, swap tuning, full-resolution bench) all
lay out through :func:`grid`, so a sheet reads the same wherever it comes from.
"""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw

LINE = 12  # px per text line of PIL's default bitmap font
CHAR = 6  # its width of a character, px
PAD = 4


def grid(rows: list[list], captions: list[list[str]] | None = None, title: str = "",
         tile: tuple[int, int] | None = None, pad: int = PAD) -> Image.Image:  # fmt: skip
    """``rows`` of images (uint8 RGB arrays or PIL images; rows may differ in length) laid out left to right, top
    to bottom, each ``captions[i][j]`` (may hold several lines) under it and ``title`` wrapped to the width above.

    Every cell is ``tile`` = (width, height) px, by default the largest image's width and height; an image of
    another size is scaled to fit its cell, aspect ratio kept, and centred. The sheet is
    ``cols * (width + pad) + pad`` wide and ``head + len(rows) * (height + captions + pad) + pad`` high, where the
    captions' band is one :data:`LINE` per line of the longest caption and ``head`` the title's lines.
    """
    images = [[(im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))).convert("RGB") for im in row]
              for row in rows]  # fmt: skip
    w, h = tile or (max(im.width for row in images for im in row), max(im.height for row in images for im in row))
    cols = max(len(row) for row in images)
    width = cols * (w + pad) + pad
    lines = textwrap.wrap(title, max(20, (width - 2 * pad) // CHAR))
    head = len(lines) * LINE + 4 if lines else pad
    band = LINE * max((c.count("\n") + 1 for row in captions or [] for c in row if c), default=0)
    sheet = Image.new("RGB", (width, head + len(rows) * (h + band + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, text in enumerate(lines):
        draw.text((pad, 2 + k * LINE), text, fill=(0, 0, 0))
    for i, row in enumerate(images):
        y = head + i * (h + band + pad)
        for j, im in enumerate(row):
            x = pad + j * (w + pad)
            fitted = _fit(im, w, h)
            sheet.paste(fitted, (x + (w - fitted.width) // 2, y + (h - fitted.height) // 2))
            caption = captions[i][j] if captions and j < len(captions[i]) else ""
            if caption:
                draw.multiline_text((x, y + h + 2), caption, fill=(0, 0, 0), spacing=LINE - 10)
    return sheet


def _fit(im: Image.Image, w: int, h: int) -> Image.Image:
    """``im`` scaled to the largest size inside w x h with its aspect ratio (itself when it is that size)."""
    s = min(w / im.width, h / im.height)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im if size == im.size else im.resize(size, Image.LANCZOS)
