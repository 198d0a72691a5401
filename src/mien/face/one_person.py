"""Which of several photos show one person: the check `mien personalize` and `mien generate` (and the library's
:meth:`mien.edit.Editor.prepare`) apply before they combine the photos' identities, so photos of two people
are never averaged into a third.

The rule (docs/personalize.md, "Photos"): the person is the photo whose median face-api distance to the
others is smallest (the medoid), with every photo within dlib's same-person threshold of it; a photo further
away is skipped with one message naming it. Two photos that are not the same person, or a medoid that agrees
with no strict majority among three or more, leave no consistent person: a one-line error naming the photos.
The threshold against London Set pairs: scripts/same_person_distances.py, docs/personalize.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mien.errors import MienError


@torch.no_grad()
def one_person(crops: np.ndarray, names: list[str], identity_encoder, skip: Callable[[str, str], None] | None = None,
               threshold: float | None = None) -> list[int]:  # fmt: skip
    """Indices of the aligned ``crops`` (N, 128, 128, 3) that show one person (module docstring); ``skip(name,
    reason)`` is called for each photo left out; ``identity_encoder.faceapi`` gives the descriptors."""
    from mien.evaluate.metrics import DLIB_THRESHOLD

    threshold = DLIB_THRESHOLD if threshold is None else threshold
    if len(crops) == 1:
        return [0]
    x = torch.from_numpy(np.asarray(crops)).permute(0, 3, 1, 2).float()
    desc = identity_encoder.faceapi(x.to(next(identity_encoder.parameters()).device)).cpu().double()
    d = torch.cdist(desc, desc).numpy()
    n = len(crops)
    medoid = int(np.argmin([np.median(np.delete(d[i], i)) for i in range(n)]))
    keep = [i for i in range(n) if d[medoid, i] < threshold]
    if len(keep) < 2 or (n > 2 and len(keep) * 2 <= n):
        apart = ", ".join(f"{names[i]} {d[medoid, i]:.2f}" for i in range(n) if i != medoid)
        raise MienError(f"the photos do not show one person: face-api distance to {names[medoid]}: {apart} (same "
                        f"person below {threshold}); give photos of one person only")
    for i in range(n):
        if i not in keep and skip is not None:
            skip(names[i], f"another person (face-api distance {d[medoid, i]:.2f} to {names[medoid]}, same person "
                           f"below {threshold})")
    return keep


def keep_one_person(aligned, names: list[str] | None, identity_encoder, skip: Callable[[str, str], None] | None = None,
                    threshold: float | None = None):  # fmt: skip
    """``aligned`` (:class:`mien.pipeline.AlignedPhotos`) less the photos of someone else (:func:`one_person`),
    each added to its ``skipped`` list as "name: reason" and passed to ``skip(name, reason)``; ``names``: of
    every photo given (as to :func:`mien.pipeline.align_photos`). The check generation and personalisation share."""
    from mien.pipeline import AlignedPhotos

    sources = aligned.sources or list(range(len(aligned.crops)))
    names = names or [f"photo {i + 1}" for i in range(max(sources) + 1)]
    others = []

    def left_out(name: str, reason: str) -> None:
        others.append(f"{name}: {reason}")
        if skip is not None:
            skip(name, reason)

    keep = one_person(np.stack(aligned.crops), [names[i] for i in sources], identity_encoder, left_out, threshold)
    if len(keep) == len(aligned.crops):
        return aligned
    crops, faces, matrices, kept_sources = (
        [values[k] for k in keep] if values else values
        for values in (aligned.crops, aligned.faces, aligned.matrices, aligned.sources))
    return AlignedPhotos(crops, faces, aligned.skipped + others, matrices, kept_sources)
