"""Putting a generated 128 px face back into the photo it was edited from.

The editor (:class:`mien.edit.Editor`) calls one function with the signature of :data:`Paste`, by default
:func:`paste_into_photo`; another (full-resolution detail transfer, say) replaces it by being passed as
``Editor(paste=...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch.nn.functional as F

# paste(photo, face, matrix, keep) -> the photo with the face in it: photo (H, W, 3) uint8, face (128, 128, 3)
# uint8 (the generated aligned crop), matrix the 2x3 photo -> crop matrix the crop was aligned with, keep
# the settings' kept region ("background": only the face box the edit may redraw is pasted)
Paste = Callable[[np.ndarray, np.ndarray, np.ndarray, str], np.ndarray]


def paste_into_photo(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str) -> np.ndarray:
    """A generated 128 px face put back into the photo it was edited from (inverse alignment warp,
    feathered blend). With ``keep="background"`` only the face box the edit may redraw is pasted (its edge
    feathered over ~8 crop pixels), so the photo away from the face stays exactly as it was rather than
    taking the crop's background, which went through TAEF2."""
    from mien.face import align
    from mien.regions import keep_mask

    mask = None  # keep="none": the whole crop
    if keep != "none":
        mask = (1 - F.interpolate(keep_mask(keep), size=image.shape[:2], mode="bilinear", align_corners=False))[0, 0].numpy()
    return align.paste_back(photo, image, matrix, mask=mask)
