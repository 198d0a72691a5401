"""Reading user photos safely.

Every photo that enters mien goes through :func:`load_rgb`, so the rules live in one place:
EXIF orientation is honoured, greyscale / palette / CMYK / 16-bit images become 8-bit RGB, and
anything unreadable becomes a one-line :class:`~mien.errors.MienError` instead of a traceback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mien.errors import MienError, NoFaceError

# A 12,000 x 8,000 photo is 96 MP; anything larger is almost certainly not a face photo and may be a
# decompression bomb (a tiny file that expands to gigabytes). Pillow's own guard warns at ~89 MP and
# raises at twice that; we check the header size before decoding so memory is never committed.
MAX_PIXELS = 100_000_000

# Below this shorter side no face detector can find a face (MediaPipe's detector works on 128 px input;
# a face needs some tens of pixels), so such a photo is reported as too small, not as faceless.
MIN_SIDE = 32

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` into an ``HxWx3`` uint8 RGB array, upright according to its EXIF tag."""
    path = check_photo_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise MienError(
                        f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit; "
                        "downscale it first"
                    )
                im.load()  # decode now so a truncated file fails here, not later
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except MienError:
        raise
    except UnidentifiedImageError:
        raise MienError(f"{path}: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MienError(
            f"{path}: image is over the {max_pixels / 1e6:.0f} MP limit (possibly a decompression bomb); downscale it first"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MienError(f"{path}: the file is damaged or truncated ({e}); re-export or re-download it") from None


def check_photo_path(path: str | Path) -> Path:
    """``path`` names a file (not a folder); a one-line MienError otherwise. Nothing is read."""
    path = Path(path)
    if not path.exists():
        raise MienError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise MienError(f"{path}: is a folder, not a photo; name the photo files in it (e.g. {path / '*.jpg'})")
    return path


def check_face_size(rgb: np.ndarray) -> None:
    """A :class:`~mien.errors.NoFaceError` saying "too small" for a photo too small to hold a detectable face."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise NoFaceError(f"the photo is {w}x{h} px, too small to hold a face; use one at least {MIN_SIDE} px on "
                          "its shorter side (a face some 100 px wide works best)")


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range instead of clipping at 255.
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        im = Image.fromarray(a.round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels over white, as a viewer would show them.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    # Pillow converts CMYK, YCbCr, L, 1 and P to RGB with its standard matrices.
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def expand_inputs(items: list[str]) -> list[Path]:
    """Photos named on the command line: files as given, folders searched (sorted) for images."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
