"""Writing generated images: PNGs that carry their request, seed and model hash (and the watermark: every
image goes through :func:`mien.io.provenance.save_image`), plus a contact sheet.

Where a run's files go is predictable: ``mien generate`` without ``--out`` writes into a new numbered
folder (``mien-out/001``, ``mien-out/002``, ...), so no run ever mixes with or overwrites another;
``--out DIR`` writes into DIR itself and refuses a DIR that already holds mien outputs unless told
``--overwrite``. Inside a run folder the images are numbered from 000.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mien.errors import MienError
from mien.io import provenance
from mien.io.grid import grid

DEFAULT_BASE = Path("mien-out")  # git-ignored in a source checkout (.gitignore)
_RUN = re.compile(r"^\d{3,}$")
# what save_numbered / save_sheet write
_OUTPUT = re.compile(r"^(\d{3,}_seed-?\d+|sheet)\.png$|^\d{3,}_seed-?\d+_photo\.(png|jpg|webp)$")


def next_run_dir(base: Path = DEFAULT_BASE) -> Path:
    """``base/NNN``, one past the highest numbered run folder in ``base`` (001 for the first)."""
    base = Path(base)
    taken = [int(p.name) for p in base.iterdir() if p.is_dir() and _RUN.match(p.name)] if base.is_dir() else []
    return base / f"{max(taken, default=0) + 1:03d}"


def earlier_outputs(out: Path) -> list[Path]:
    """The files of an earlier run in ``out`` (images and sheet this module writes; nothing else)."""
    out = Path(out)
    return sorted(p for p in out.iterdir() if p.is_file() and _OUTPUT.match(p.name)) if out.is_dir() else []


def check_overwrite(out: Path, overwrite: bool) -> None:
    """Refuse (one line) to write into a folder holding an earlier run's outputs unless ``overwrite``."""
    old = earlier_outputs(out)
    if old and not overwrite:
        raise MienError(f"--out {out} already holds {len(old)} file(s) of an earlier run ({old[0].name}, ...); "
                        "add --overwrite to replace them, or leave --out out to write into a new numbered folder "
                        f"under {DEFAULT_BASE}/")


def clear_earlier_outputs(out: Path) -> None:
    """Delete an earlier run's outputs from ``out`` (``--overwrite``), so no stale image stays beside new ones."""
    for p in earlier_outputs(out):
        p.unlink()


def save_numbered(out: Path, index: int, crop: np.ndarray, photo: np.ndarray | None, meta: dict,
                  photo_format: str = "png") -> list[Path]:  # fmt: skip
    """``out/NNN_seedS.png`` (the 128 px crop, ``meta`` and mien's version in its PNG text chunk ``mien``) and,
    when ``photo`` is given, ``out/NNN_seedS_photo.<photo_format>`` (the edit in the identity photo, at its
    size; png, jpg or webp); both watermarked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [provenance.save_image(out / f"{index:03d}_seed{meta['seed']}.png", crop, meta)]
    if photo is not None:
        paths.append(provenance.save_image(out / f"{index:03d}_seed{meta['seed']}_photo.{photo_format}", photo, meta,
                                           source=provenance.COMPOSITE))
    return paths


def save_sheet(out: Path, identity: np.ndarray, crops: list[np.ndarray], metadata: list[dict],
               reference: np.ndarray | None = None, like: str | None = None,
               scene: np.ndarray | None = None) -> Path:  # fmt: skip
    """``out/sheet.png``: the identity crop, a swap's scene face (``--into``) and the reference crop (``--like``)
    if any, then every output with its seed, under the request (and the reference photo's name where the
    request does not give it)."""
    from mien.expression.targets import like_label

    images, labels = [identity], ["identity"]
    if scene is not None:
        images.append(scene)
        labels.append("scene (--into)")
    if reference is not None:
        images.append(reference)
        labels.append("reference (--like)")
    images += crops
    labels += [f"seed {m['seed']}" for m in metadata]
    request = metadata[0]["request"]
    named = like is None or request.startswith(like_label(like))  # mien generate's request names its --like photo
    title = f"request: {request}" + ("" if named else f" (like {Path(like).name})")
    sheet = np.asarray(grid([images], [labels], title, tile=(128, 128)))
    return provenance.save_image(Path(out) / "sheet.png", sheet, {k: v for k, v in metadata[0].items() if k != "seed"},
                                 source=provenance.COMPOSITE)


def save_result(out: Path, result, reference: np.ndarray | None = None, like: str | None = None) -> list[Path]:
    """Every image of an :class:`mien.edit.EditResult` (:func:`save_numbered`, numbered from 000) and the sheet."""
    paths = []
    for i, crop in enumerate(result.crops):
        photo = result.photos[i] if result.photos is not None else None
        paths += save_numbered(out, i, crop, photo, result.metadata[i])
    scene = getattr(result, "scene", None)
    paths.append(save_sheet(out, result.subject.identity.crops[0], result.crops, result.metadata, reference, like,
                            scene=None if scene is None else scene.identity.crops[0]))
    return paths
