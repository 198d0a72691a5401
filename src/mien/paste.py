"""Putting a generated 128 px face back into the photo it was edited from.

The editor (:class:`mien.edit.Editor`) calls one function with the signature of :data:`Paste`, by default
:func:`paste_detail` (full-resolution detail transfer, :mod:`mien.detail`); :func:`paste_into_photo`
(the crop itself, warped back and feathered over a box) is the older paste, kept for comparison
(``mien generate --paste crop``). Another replaces them by being passed as ``Editor(paste=...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch.nn.functional as F

from mien.detail import DEFAULT as DETAIL_DEFAULT

# paste(photo, face, matrix, keep, landmarks=None) -> the photo with the face in it: photo (H, W, 3) uint8,
# face (128, 128, 3) uint8 (the generated aligned crop), matrix the 2x3 photo -> crop matrix the crop was
# aligned with, keep the settings' kept region ("background": only the face box the edit may redraw is
# pasted), landmarks (keyword) the photo's MediaPipe landmarks of that face (478, 2 or 3) or None;
# reconstruction (keyword, given only to a paste that names it and does not set uses_reconstruction False) the
# decoder's reconstruction of the unedited crop (128, 128, 3) uint8
Paste = Callable[..., np.ndarray]


def editable_region(keep: str, size: int = 128) -> np.ndarray | None:
    """(size, size) float32 weights of the crop an edit with kept region ``keep`` may redraw (1) or keeps
    (0), softened at the box edge; None for ``keep="none"`` (all of it)."""
    from mien.regions import keep_mask

    if keep == "none":
        return None
    return (1 - F.interpolate(keep_mask(keep), size=(size, size), mode="bilinear", align_corners=False))[0, 0].numpy()


def paste_into_photo(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str,
                     landmarks: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A generated 128 px face put back into the photo it was edited from (inverse alignment warp,
    feathered blend). With ``keep="background"`` only the face box the edit may redraw is pasted (its edge
    feathered over ~8 crop pixels), so the photo away from the face stays exactly as it was rather than
    taking the crop's background, which went through TAEF2. ``landmarks`` is not used (a box, not the face's
    shape)."""
    from mien.face import align

    return align.paste_back(photo, image, matrix, mask=editable_region(keep, image.shape[0]))


def paste_detail(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str,
                 landmarks: np.ndarray | None = None, reconstruction: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The edit carried to the photo's own resolution: the photo's pixels moved by the edit's motion, the
    edit's low frequencies and its new structure (creases, lip lines, teeth) added, inside a feathered
    face-oval mask (:func:`mien.detail.transfer_detail`). ``reconstruction``: the decoder's reconstruction of the
    unedited crop (:meth:`mien.pipeline.MienPipeline.reconstruction`), for ``DetailSettings.reference``."""
    from mien.detail import transfer_detail

    return transfer_detail(photo, image, matrix, keep, landmarks, reconstruction=reconstruction)


# the editor decodes the reconstruction (one TAEF2 decode, ~0.09 s on a CPU) only for a paste that uses it:
# paste_detail pastes with DetailSettings' defaults, so it does exactly when their reference needs it (the default,
# the photo's crop, does not: docs/fullres.md, "the decoder's reconstruction as the reference")
paste_detail.uses_reconstruction = DETAIL_DEFAULT.uses_reconstruction

# `mien generate --paste NAME`
PASTES: dict[str, Paste] = {"detail": paste_detail, "crop": paste_into_photo}
