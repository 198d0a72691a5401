"""Regions of the aligned face in latent cells: which cells an edit may redraw and which it keeps.

Every face is aligned to one 128 px template (:mod:`mien.face.align`), so the face region is one fixed
box of latent cells rather than a per-photo mask. Kept region (``--keep background``; Blended Latent
Diffusion, Avrahami et al., SIGGRAPH 2023, sec. 3): outside the box the photo is kept at every step.
Both the edit methods (:mod:`mien.editing`) and the guidance that moves the face
(:mod:`mien.guidance`) read these masks, and the paste back into the photo (:mod:`mien.paste`) feathers
the same box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mien.errors import MienError
from mien.settings import KEEP_REGIONS

# Latent cells (8 px each) the model may redraw with keep="background": rows 4-14, columns 3-12 of
# the 16 x 16 grid, i.e. pixels y 32-120, x 24-104 of the template — brows to chin, cheek to cheek,
# with room for an open jaw. Chosen by eye on the template and checked on London quick (model card).
FACE_BOX = (4, 15, 3, 13)


def keep_mask(keep: str, size: int = 16, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(1, 1, size, size) weights in [0, 1]: 1 where the identity photo is kept, 0 where the model draws
    (``box``: the backbone's face box in latent cells, default :data:`FACE_BOX`).

    The box edge is softened over one cell (3x3 box filter) so that the seam is blended, not cut.
    """
    if keep not in KEEP_REGIONS:
        raise MienError(f"unknown keep region '{keep}'; choose one of {', '.join(KEEP_REGIONS)}")
    if keep == "none":
        return torch.zeros(1, 1, size, size)
    m = torch.ones(1, 1, size, size)
    y0, y1, x0, x1 = FACE_BOX if box is None else box
    m[..., y0:y1, x0:x1] = 0
    return F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def edit_region(keep: str, device=None, size: int = 16, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(1, 1, size, size) cells an edit with kept region ``keep`` may redraw: 1 - :func:`keep_mask`."""
    return 1 - keep_mask(keep, size, box).to(device)
