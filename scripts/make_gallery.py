"""The gallery of docs/gallery.md: typical outputs of `mien generate` at today's defaults on London Set people.

Per person (the first ``--people`` London dev people by id, their neutral photo) a row of the input and the
seven basic labels; then one row of a swap (the second person put into the first person's photo: the scene's
own expression, then happy) and the README's vocabulary-term and AU examples on the first person. Every image
is the default edit (:class:`mien.edit.Editor`, as `mien generate` builds it: default settings, the
full-resolution paste for edits and the crop paste for swaps), seed ``--seed``, shown as the same face-region
crop of the full-resolution photo output per row. Only London Set photos (CC BY 4.0) may appear here. Each
output's darkened-eye readings (those of `mien evaluate`, on its 128 px crop) are printed as it is made.

    mkdir -p /tmp/raw && tar xf ../shared/data/faces128/dev.tar -C /tmp/raw --wildcards 'london_*raw.jpg'
    python scripts/make_gallery.py --raw /tmp/raw --out docs/gallery/gallery.jpg
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ATTRIBUTION = "Face Research Lab London Set, DeBruine & Jones 2017, CC BY 4.0"
TILE_W, TILE_H, PAD = 128, 160, 3  # 160 px tall: three people fit 120 kB at quality ~68
# the face region shown, in aligned-crop pixels (4:5): brows to chin, the template's eyes at y 52 and mouth at y 98
# (mien.face.align); the rest of the 128 px crop is hair and background the default edit keeps
FACE = (20, 14, 108, 124)
# the README's own examples of a vocabulary term and an AU request (README.md, "mien generate")
EXTRAS = (("elation", None), (None, "AU12=3,AU6=2"))
SWAP_LABELS = (None, "happy")  # None: the scene face's own expression (a plain swap)


def london_people(raw: Path, n: int) -> list[tuple[str, Path]]:
    """(person, neutral photo) of the first ``n`` London dev people by id (london_001 is the bundled example)."""
    found = sorted(raw.glob("london_*_neutral.raw.jpg"))
    if len(found) < max(n, 2):
        sys.exit(f"make_gallery: {raw} holds {len(found)} London neutral photos, {max(n, 2)} needed; extract them "
                 "from dev.tar (see --help)")
    return [(p.name.split("_neutral")[0], p) for p in found[:n]]


def face_box(matrix: np.ndarray, shape: tuple) -> tuple[int, int, int, int]:
    """:data:`FACE` of the aligned 128 px crop in photo pixels (its centre and size; the alignment is a similarity,
    so a 4:5 box stays 4:5), moved inside the photo."""
    from mien.face import align

    x0, y0, x1, y1 = FACE
    cx, cy = align.apply_affine(align.invert_affine(matrix), np.array([[x0 + x1, y0 + y1]]) / 2)[0]
    w, h = (x1 - x0) / align.affine_scale(matrix), (y1 - y0) / align.affine_scale(matrix)
    x = int(round(min(max(cx - w / 2, 0), shape[1] - w)))
    y = int(round(min(max(cy - h / 2, 0), shape[0] - h)))
    return x, y, x + int(round(w)), y + int(round(h))


def tile(photo: np.ndarray, box, caption: str) -> tuple[np.ndarray, str]:
    """(the face box of ``photo`` at TILE_W x TILE_H, its caption): one cell of the gallery."""
    from PIL import Image

    x0, y0, x1, y1 = box
    return np.asarray(Image.fromarray(photo[y0:y1, x0:x1]).resize((TILE_W, TILE_H), Image.LANCZOS)), caption


def sheet(rows: list[list[tuple[np.ndarray, str]]], title: str) -> np.ndarray:
    from mien.io.grid import grid

    return np.asarray(grid([[im for im, _ in row] for row in rows], [[c for _, c in row] for row in rows], title,
                           tile=(TILE_W, TILE_H), pad=PAD))  # fmt: skip


class Outputs:
    """Each request as `mien generate` makes it: the default settings, one image of ``seed``, its ``_photo``
    output (the edit's full-resolution paste; a swap's crop paste, as ``--into`` chooses by default)."""

    def __init__(self, seed: int):
        from mien.cli.generate import paste_for
        from mien.edit import Editor
        from mien.paste import PASTES
        from mien.settings import GenerationSettings

        self.editor = Editor.from_pretrained()
        swap_paste = PASTES[paste_for(SimpleNamespace(paste_with=None, into=True))]  # the CLI's rule for --into
        self.swapper = Editor(self.editor.pipeline, paste=swap_paste)
        self.settings, self.seed, self.made, self.cpu = GenerationSettings(), seed, 0, time.process_time()

    def __call__(self, subject, expression=None, au=None, into=None) -> np.ndarray:
        from mien.expression.targets import parse_request

        request = parse_request(expression, 1.0, au, None)
        if into is None:
            result = self.editor.edit(subject, request, self.settings, n=1, seed=self.seed)
        else:
            result = self.swapper.swap(subject, into, request, self.settings, n=1, seed=self.seed)
        self.made += 1
        print(f"{self.made}: {expression or au or 'plain swap'} ({time.process_time() - self.cpu:.0f} s CPU); "
              f"{darkening(result, self.editor)}", file=sys.stderr)  # fmt: skip
        return result.photos[0]


def darkening(result, editor) -> str:
    """The darkened-eye readings of ``mien evaluate`` (:mod:`mien.evaluate.critic`) of the output's 128 px crop
    against the photo it was made in (a swap's scene), as docs/realism.md quotes them for the gallery, and where
    the crop's eyes are against the template boxes those readings use (EYE_BOXES: x 33-55 and 73-95, y 46-58)."""
    from mien.evaluate import critic as C
    from mien.face import align

    photo = result.scene or result.subject
    before = align.warp_to_crop(photo.photo, photo.matrix)
    crop = result.crops[0]
    readings = {"eyes": (C.eye_darkening(crop, before), C.DARK_EYES_THRESHOLD),
                "under-eyes": (C.under_eye_darkening(crop, before), C.DARK_UNDER_EYES_THRESHOLD)}
    text = ", ".join(f"{k} {v:.3f}" + (" (darkened)" if v < t else "") for k, (v, t) in readings.items())
    return f"{text}; {eye_place(editor, crop)}"


def eye_place(editor, crop: np.ndarray) -> str:
    """MediaPipe's eye corners (x) and lower-lid centres (y) on a 128 px crop: landmarks 33/133 and 145 for the
    image-left eye, 362/263 and 374 for the other (the face mesh's topology)."""
    faces = editor.detect(crop, 1)
    if not faces:
        return "no face found on the crop"
    p = faces[0].landmarks[:, :2]
    xs = [f"{min(p[a][0], p[b][0]):.0f}-{max(p[a][0], p[b][0]):.0f}" for a, b in ((33, 133), (362, 263))]
    return f"eye corners x {' | '.join(xs)}, lower lids y {p[145][1]:.0f} | {p[374][1]:.0f}"


def label_row(make: Outputs, person: str, subject) -> list[tuple[np.ndarray, str]]:
    """The input, then the seven basic labels (face-api's order), all cut to the input's face box."""
    from mien.expression.basic import BASIC

    box = face_box(subject.matrix, subject.photo.shape)
    return [tile(subject.photo, box, f"{person} (input)")] + [tile(make(subject, label), box, label) for label in BASIC]


def last_row(make: Outputs, first: tuple, second: tuple) -> list[tuple[np.ndarray, str]]:
    """The second person swapped into the first one's photo (:data:`SWAP_LABELS`), then :data:`EXTRAS` on the
    first; ``first``, ``second``: (person, subject)."""
    (scene_person, scene), (person, subject) = first, second
    box = face_box(scene.matrix, scene.photo.shape)
    row = [tile(scene.photo, box, f"{scene_person} (scene)"),
           tile(subject.photo, face_box(subject.matrix, subject.photo.shape), f"{person} (identity)")]  # fmt: skip
    row += [tile(make(subject, label, into=scene.photo), box, "swap: " + (label or "plain")) for label in SWAP_LABELS]
    return row + [tile(make(scene, term, au), box, f"{scene_person[-3:]}: {term or au}") for term, au in EXTRAS]


def save(image: np.ndarray, out: Path, meta: dict, quality: int, max_kb: int) -> int:
    """Write ``image`` (watermarked, with ``meta``) at the highest quality up to ``quality`` that fits ``max_kb``."""
    from mien.io import provenance

    out.parent.mkdir(parents=True, exist_ok=True)
    while (provenance.save_image(out, image, meta, source=provenance.COMPOSITE, quality=quality).stat().st_size
           > max_kb * 1000 and quality > 30):  # fmt: skip
        quality -= 1
    return quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True, help="folder with the dev split's london_*.raw.jpg")
    ap.add_argument("--out", type=Path, required=True, help="the gallery JPEG to write")
    ap.add_argument("--people", type=int, default=3, help="London people, the first by id (default 3, at least 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--quality", type=int, default=80, help="JPEG quality (default 80)")
    ap.add_argument("--max-kb", type=int, default=120, help="the highest quality up to --quality whose file is at most "
                    "this many kB (1000 bytes; default 120) is used")
    args = ap.parse_args()
    from mien.threads import configure

    configure(args.threads)  # before torch is imported
    from mien.io.image import load_rgb

    people = london_people(args.raw, max(args.people, 2))
    make = Outputs(args.seed)
    subjects = [(person, make.editor.prepare([load_rgb(path)], names=[str(path)])) for person, path in people]
    rows = [label_row(make, person, subject) for person, subject in subjects] + [last_row(make, *subjects[:2])]
    hash_ = make.editor.model_hash
    image = sheet(rows, f"mien {hash_}, default settings, seed {args.seed}. Photos: {ATTRIBUTION}. "
                        "Outputs are synthetic.")  # fmt: skip
    meta = {"model_hash": hash_, "seed": args.seed, "people": [p for p, _ in people], "attribution": ATTRIBUTION}
    quality = save(image, args.out, meta, args.quality, args.max_kb)
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]}, quality {quality}, {args.out.stat().st_size / 1000:.0f} kB; "
          f"{make.made} outputs, {time.process_time() - make.cpu:.0f} s CPU", file=sys.stderr)
    make.editor.close()


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
