"""An invisible mark in the pixels of every image mien generates, and its detector.

The mark is one bit ("made by mien"), meant to survive what happens to an image after it is shared:
JPEG re-compression, downscaling and cropping. It is a self-referencing tiled pattern in the style of
JAWS (Kalker, Depovere, Haitsma and Maes, "A video watermarking system for broadcast monitoring",
Proc. SPIE 3657, 1999; Kutter, "Watermarking resisting to translation, rotation and scaling", Proc.
SPIE 3528, 1998):

- **Pattern.** A fixed 32 x 32 random tile whose spectrum is confined to a low/mid band (3.5 to 8 cycles
  per tile), tiled over a working grid whose short side is 128 cells (4 tiles), upsampled to the image and
  added to its luminance. Because the grid follows the image's short side, a resized image carries the
  same pattern relative to its size; because the band is low, JPEG quality 75 and a half-size resize
  leave it nearly intact (both remove high frequencies).
- **Detection.** The image is resampled onto the working grid, its tiles are summed into one 32 x 32
  buffer ("folding": the mark adds coherently, the picture does not), and the buffer is compared with
  the tile by symmetric phase-only matched filtering (SPOMF, as in JAWS) over every cyclic shift at once,
  so a crop (which shifts the tile grid) needs no search over positions. A crop also shrinks the short
  side, so the grid is tried at the scales a crop of up to 30 % leaves (``CROP_SCALES``). The score is the
  correlation peak in standard deviations of all shifts' correlations; the threshold (``THRESHOLD``) is
  set on unmarked training-split faces and the false-positive rate measured on other photos
  (docs/provenance.md, scripts/bench_watermark.py).

Why not a library: ``invisible-watermark`` (the Stable Diffusion reference scripts' choice) embeds in
DWT-DCT blocks at fixed positions, which its own README lists as not surviving resizing or cropping,
and needs images of at least 256 px; TrustMark and RivaGAN are neural codecs whose weights would be
another download and far slower on a 12-megapixel photo on a CPU. The tile here is public (a fixed
seed): the mark says where an image came from, it does not resist someone removing it on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

TILE = 32  # tile side in working-grid cells
GRID = 128  # the working grid's short side: 4 tiles
BAND = (3.5, 8.0)  # the pattern's radial frequency band, cycles per tile
SEED = 0x6D69656E  # "mien"
STRENGTH = 2.4  # RMS of the added luminance, grey levels (PSNR about 40.4 dB; rounding costs a little)
THRESHOLD = 5.6  # detection score above which an image counts as marked (docs/provenance.md)
NORMALIZE = True  # local contrast normalisation before folding (score_at)
LOWCUT = 6.0  # its high-pass: Gaussian sigma in grid cells, below the band's lowest frequency
SPOMF = True  # phase-only matched filter (False: the buffer's spectrum whitened, the tile's kept)
# Grid scales tried by the detector: the fraction of the short side a crop kept (1.0: no crop), steps
# of 1.2 %, well within the folded correlation peak's tolerance to a scale error (steps of 2 % lost
# 3 % of cropped 128 px faces; finer steps than 1.2 % gained nothing on them).
CROP_SCALES = tuple(np.round(np.geomspace(1.0, 0.7, 31), 4))


@lru_cache(maxsize=1)
def tile() -> np.ndarray:
    """The 32 x 32 pattern (zero mean, unit RMS, periodic), the same on every machine."""
    rng = np.random.default_rng(SEED)
    f = np.fft.fftfreq(TILE) * TILE
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    band = (r >= BAND[0]) & (r <= BAND[1])
    spec = (rng.standard_normal((TILE, TILE)) + 1j * rng.standard_normal((TILE, TILE))) * band
    t = np.real(np.fft.ifft2(spec))
    t -= t.mean()
    return (t / t.std()).astype(np.float32)


def _band() -> np.ndarray:
    f = np.fft.fftfreq(TILE) * TILE
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    return (r >= BAND[0]) & (r <= BAND[1])


def _grid_size(h: int, w: int, scale: float = 1.0) -> tuple[int, int]:
    s = GRID * scale / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def pattern(h: int, w: int) -> np.ndarray:
    """The mark for an ``h x w`` image (float32, unit RMS): the tile repeated over the working grid, then
    resized to the image."""
    gh, gw = _grid_size(h, w)
    t = tile()
    grid = np.tile(t, (-(-gh // TILE), -(-gw // TILE)))[:gh, :gw]
    if (gh, gw) == (h, w):
        return grid
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC if h > gh else cv2.INTER_AREA)


def embed(rgb: np.ndarray, strength: float = STRENGTH) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3) with the mark added to its luminance (the same offset on R, G and B, so
    colours do not shift)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"embed takes uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    delta = np.rint(pattern(h, w) * np.float32(strength)).astype(np.int16)  # integer maths: cheap at 12 MP
    out = rgb.astype(np.int16)
    out += delta[..., None]
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


@dataclass(frozen=True)
class Detection:
    """A detector's answer: ``found`` when ``score`` (the correlation peak in standard deviations) is over
    the threshold; ``scale``: the grid scale that scored best (1.0: the image's own size relations)."""

    found: bool
    score: float
    scale: float


def _luma(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def _normalized(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local contrast normalisation of a grid image: its high-pass divided by its local energy (strong
    edges, such as hair and the face's outline, would otherwise dominate the folded buffer), and that
    energy envelope."""
    hp = g - cv2.GaussianBlur(g, (0, 0), LOWCUT)
    env = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 4.0)) + 1.0
    return hp / env, env


def _fold(g: np.ndarray) -> np.ndarray:
    """The sum of a grid image's 32 x 32 tiles (the last row and column of tiles partial)."""
    gh, gw = g.shape
    ph, pw = -(-gh // TILE) * TILE, -(-gw // TILE) * TILE
    buf = np.zeros((ph, pw), np.float32)
    buf[:gh, :gw] = g
    return buf.reshape(ph // TILE, TILE, pw // TILE, TILE).sum(axis=(0, 2))


def score_at(y: np.ndarray, scale: float) -> float:
    """The SPOMF peak (in standard deviations over all shifts) of luminance ``y`` on the grid at ``scale``."""
    h, w = y.shape
    gh, gw = _grid_size(h, w, scale)
    if min(gh, gw) < TILE:
        return 0.0
    g = cv2.resize(y, (gw, gh), interpolation=cv2.INTER_AREA if gh < h else cv2.INTER_LINEAR)
    g = _normalized(g)[0] if NORMALIZE else g - g.mean()
    folded = _fold(g)
    band = _band()
    fb, ft = np.fft.fft2(folded), np.fft.fft2(tile())
    cross = fb * np.conj(ft)
    if SPOMF:
        cross = np.where(band, cross / np.maximum(np.abs(cross), 1e-12), 0)
    else:
        cross = np.where(band, cross / np.maximum(np.abs(fb), 1e-12), 0)
    c = np.real(np.fft.ifft2(cross))
    sd = c.std()
    return float((c.max() - c.mean()) / sd) if sd > 0 else 0.0


def detect(rgb: np.ndarray, threshold: float = THRESHOLD) -> Detection:
    """Whether ``rgb`` (uint8 RGB or greyscale) carries the mark, searching the crop scales."""
    y = _luma(rgb)
    if min(y.shape) > 2 * GRID:  # one downscale first: every scale's grid is at most 128 / 0.7 cells
        k = 2 * GRID / min(y.shape)
        y = cv2.resize(y, (round(y.shape[1] * k), round(y.shape[0] * k)), interpolation=cv2.INTER_AREA)
    best = max(((score_at(y, s), s) for s in CROP_SCALES), key=lambda t: t[0])
    return Detection(best[0] > threshold, round(best[0], 2), float(best[1]))
