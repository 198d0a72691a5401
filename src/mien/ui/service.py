"""What the buttons of `mien ui` do, as plain functions over :class:`mien.edit.Editor` (no Gradio here).

The page (:mod:`mien.ui.app`) only lays out controls and calls a :class:`Service`; every photo is read by
:func:`mien.io.image.load_rgb`, every request built by :func:`mien.expression.targets.parse_request`, every
image made by :meth:`mien.edit.Editor.edit`, so the page and `mien generate` cannot drift apart. One
service, with its nets loaded once, serves every visitor: the editor is thread-safe after construction.

Controls → request (the same rule as `mien generate`, docs/expressions.md):

- the expression is a basic label or any word the vocabulary resolves (a term, synonym, compound or
  recipe), scaled by the intensity;
- the Action Unit sliders start at the levels the expression's target reads as (:func:`preset`); only
  sliders the user moved away from that preset are sent, as exact AU requests on top (an unmoved slider
  means "as the expression has it": sending every slider would set each AU to its calibrated level,
  and AU 0 is the pool median, not "no movement");
- "from neutral" on (the default): the expression replaces the photo's own (the target starts from the
  neutral face, as in `mien generate`); off: the expression's movement is added to the photo's own
  expression (the target starts from the photo's blendshapes, as ``--like`` of the photo itself);
- a reference photo, when given, is where the target starts instead (``--like``): its expression, not
  its identity.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mien.errors import MienError, NoFaceError
from mien.expression.aus import AU_MAX, CONTROL_AUS, SIDED_AUS, AUCalibration, control_blendshapes, index_of
from mien.expression.basic import BASIC, Prototypes
from mien.expression.targets import ExpressionRequest, blendshape_target, parse_request
from mien.io.image import load_rgb
from mien.settings import GenerationSettings

MAX_FACES = 8  # faces listed per photo; more are rare in a portrait and make the picker unreadable
MAX_PHOTOS = 8  # photos of one person per request
KEEP_RESULTS_S = 600  # a result file is deleted this long after it was written
SHEET_LABELS = BASIC  # the one-click expression sheet: the 7 basic labels, face-api's order


def control_names() -> list[str]:
    """The slider names in page order: each AU once, or its L and R where its blendshapes are sided."""
    names: list[str] = []
    for a in CONTROL_AUS:
        names += [a.au + "L", a.au + "R"] if a.au in SIDED_AUS else [a.au]
    return names


CONTROLS = tuple(control_names())


def vocabulary_words() -> list[str]:
    """What the search box suggests: the 7 labels, then the 135 terms (alphabetical)."""
    from mien.expression.vocabulary import Vocabulary

    terms = sorted(t.term for t in Vocabulary.load().terms)
    return list(BASIC) + [t for t in terms if t not in BASIC]


def read_levels(blendshapes: np.ndarray, calib: AUCalibration) -> dict[str, float]:
    """Each slider's level on 0-5 for a blendshape vector: per control, the mean over its blendshapes of
    (b - rest_b) / (high_b - rest_b), the inverse of :func:`mien.expression.aus.aus_to_blendshapes` (exact
    where a control sets one blendshape)."""
    out = {}
    for name in CONTROLS:
        fr = [(blendshapes[index_of(b)] - calib.bs_rest[b]) / max(calib.bs_high[b] - calib.bs_rest[b], 1e-6)
              for b in control_blendshapes(name)]  # fmt: skip
        out[name] = round(float(AU_MAX * np.clip(np.mean(fr), 0.0, 1.0)), 1)
    return out


@dataclass
class Controls:
    """The page's expression controls."""

    expression: str | None = None  # a label, a vocabulary word or a recipe; None/"" = neutral
    intensity: float = 1.0
    aus: dict[str, float] = field(default_factory=dict)  # slider name -> level, as shown
    preset: dict[str, float] = field(default_factory=dict)  # the levels the expression put the sliders at
    from_neutral: bool = True
    reference: str | None = None  # path of a reference photo

    def moved(self) -> dict[str, float]:
        """The sliders the user moved away from the preset (these are sent as exact AU requests)."""
        return {k: float(v) for k, v in self.aus.items() if abs(float(v) - float(self.preset.get(k, 0.0))) > 1e-6}


@dataclass
class Outcome:
    """One generated image: the edited photo at its full size, the 128 px face, where the marked file is,
    its metadata and the scorecard."""

    photo: np.ndarray
    crop: np.ndarray
    path: Path
    metadata: dict
    score: dict
    request: str


class Service:
    """The UI's back end: an :class:`~mien.edit.Editor` plus the nets that score a result, loaded once."""

    def __init__(self, editor, expression_net=None, workdir: str | Path | None = None, person: str | None = None):
        self.editor = editor
        self.expression_net = expression_net
        self.protos, self.calib = Prototypes.load(), AUCalibration.load()
        self.person = person
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mien-ui-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, model: str = "default", person: str | None = None, device: str = "cpu",
                        workdir: str | Path | None = None) -> "Service":  # fmt: skip
        from mien.cli.generate import check_model_dir
        from mien.edit import Editor
        from mien.models.faceapi_expression import FaceExpressionNet

        check_model_dir(model)
        if person:
            check_person(person)
        editor = Editor.from_pretrained(model, device=device, person=person)  # the person's LoRA, if given
        return cls(editor, FaceExpressionNet.from_weights().to(device), workdir, person)

    def close(self) -> None:
        self.editor.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- inputs -----------------------------------------------------------------------------------
    def read_photos(self, paths: list[str] | None) -> list[np.ndarray]:
        """The uploaded photos, each through load_rgb (one-line errors naming the file as uploaded)."""
        paths = [p for p in (paths or []) if p]
        if not paths:
            raise MienError("no photo yet; upload or drop a photo of the person (or several of the same person)")
        if len(paths) > MAX_PHOTOS:
            raise MienError(f"{len(paths)} photos given; use at most {MAX_PHOTOS} photos of one person")
        out = []
        for p in paths:
            try:
                out.append(load_rgb(p))
            except MienError as e:
                raise MienError(str(e).replace(str(p), Path(p).name)) from None  # the name the user knows
        return out

    def faces(self, photo: np.ndarray) -> tuple[list[np.ndarray], str]:
        """Thumbnails of the faces in the photo that is edited (largest first, their index is the face to
        pick) and a line saying what was found. NoFaceError when there is none."""
        found = self.editor.detect(photo, max_faces=MAX_FACES)
        if not found:
            raise NoFaceError("no face found in the first photo; use a photo where the face is visible, "
                              "frontal-ish and well lit")
        thumbs = [_thumbnail(photo, f.box) for f in found]
        if len(found) == 1:
            note = "1 face found."
        else:
            more = " or more" if len(found) == MAX_FACES else ""
            note = (f"{len(found)}{more} faces found (largest first); pick the one to edit. With several photos, "
                    "the same index is used in each.")
        return thumbs, note

    # -- controls ---------------------------------------------------------------------------------
    def preset(self, expression: str | None, intensity: float = 1.0) -> tuple[dict[str, float], str]:
        """The slider levels an expression's target reads as (from the neutral face), and a line saying
        what the expression resolves to."""
        req = parse_request(expression or None, intensity)
        levels = read_levels(blendshape_target(req, self.protos, self.calib), self.calib)
        return levels, describe_expression(expression)

    def request(self, controls: Controls, subject=None) -> ExpressionRequest:
        """The request of the page's controls (module docstring)."""
        like = None
        if controls.reference:
            try:
                like = self.editor.reference(self.read_photos([controls.reference])[0])
            except NoFaceError as e:
                raise NoFaceError(f"reference photo: {e}") from None
        elif not controls.from_neutral and subject is not None:
            like = np.asarray(subject.identity.blendshapes, dtype=np.float64)
        au = {k: v for k, v in controls.moved().items()}
        return parse_request(controls.expression or None, controls.intensity, au or None, like)

    # -- generation -------------------------------------------------------------------------------
    def prepare(self, photos: list[np.ndarray], face: int = 0):
        return self.editor.prepare(photos, face=face)

    def generate(self, photos: list[np.ndarray], face: int, controls: Controls, seed: int = 0,
                 settings: GenerationSettings | None = None, progress=None) -> Outcome:  # fmt: skip
        """One image: the subject's photo with the requested expression, pasted back at full size, saved
        with its metadata, scored. ``progress(fraction, text)`` is called once per sampler step."""
        subject = self.prepare(photos, face)
        request = self.request(controls, subject)
        return self._one(subject, request, int(seed), settings, progress, 0.0, 1.0)

    def sheet(self, photos: list[np.ndarray], face: int, controls: Controls, seed: int = 0,
              settings: GenerationSettings | None = None, progress=None) -> list[Outcome]:  # fmt: skip
        """The expression sheet: one image per basic label at the controls' intensity (same seed, same
        start: from neutral, the photo's own expression or the reference), the AU sliders left out."""
        subject = self.prepare(photos, face)
        outs = []
        for i, label in enumerate(SHEET_LABELS):
            c = Controls(label, controls.intensity, from_neutral=controls.from_neutral, reference=controls.reference)
            outs.append(self._one(subject, self.request(c, subject), int(seed), settings, progress,
                                  i / len(SHEET_LABELS), 1 / len(SHEET_LABELS)))  # fmt: skip
        return outs

    def _one(self, subject, request, seed, settings, progress, start, span) -> Outcome:
        settings = settings or GenerationSettings()

        def step(i, total, info=None):
            if progress is not None:
                progress(start + span * (i + 1) / total, f"{request.describe()}: step {i + 1} of {total}")

        result = self.editor.edit(subject, request, settings, n=1, seed=seed, callback=step)
        meta = result.metadata[0]  # request, seed, settings, model hash, face (and person adapter)
        path = self.save(result.photos[0], meta)
        score = self.score(subject, result.crops[0])
        return Outcome(result.photos[0], result.crops[0], path, meta, score, request.describe())

    def save(self, photo: np.ndarray, metadata: dict) -> Path:
        """The download: a PNG with the watermark and the metadata (:func:`mien.io.provenance.save_image`, as
        `mien generate` writes it), in the service's temporary folder (files older than KEEP_RESULTS_S are
        deleted on the next save, the folder when the server stops)."""
        from mien.io.provenance import COMPOSITE, save_image

        with self._lock:
            self._count += 1
            n = self._count
        folder = self.workdir / f"{n:06d}"
        folder.mkdir()
        path = folder / f"mien_seed{metadata.get('seed', 0)}.png"
        save_image(path, photo, metadata, source=COMPOSITE)  # a photo with a generated face pasted in
        self.sweep()
        return path

    def sweep(self, age_s: float = KEEP_RESULTS_S) -> None:
        now = time.time()
        for d in self.workdir.iterdir():
            try:
                if now - d.stat().st_mtime > age_s:
                    shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink()
            except FileNotFoundError:  # another thread swept it
                pass

    # -- scorecard --------------------------------------------------------------------------------
    def score(self, subject, crop: np.ndarray) -> dict:
        """The scorecard of a result (module :func:`scorecard_text` renders it): the face-api (dlib) L2
        distance between the result's face and each input photo's face, on the fixed dlib chip of the
        aligned 128 px crops (the identity view mien conditions on); same person below 0.6, dlib's
        threshold (mien.evaluate.metrics); and the face-api expression probabilities of the result and of
        the photo edited."""
        import torch

        from mien.evaluate.metrics import DLIB_THRESHOLD
        from mien.models.faceapi_expression import EXPRESSIONS

        enc = self.editor.pipeline.identity
        dev = self.editor.pipeline.device
        x = torch.from_numpy(np.stack([crop, *subject.identity.crops])).permute(0, 3, 1, 2).float().to(dev)
        with torch.no_grad():
            chip, _ = enc.crops(x)
            desc = enc.recognition(chip).cpu().numpy()
            probs = None
            if self.expression_net is not None:  # as mien annotate reads it
                probs = self.expression_net.predict_chip(chip[:2]).cpu().numpy()
        dist = np.linalg.norm(desc[1:] - desc[0], axis=1)
        out = {"identity_distance": [round(float(d), 3) for d in dist], "threshold": DLIB_THRESHOLD,
               "same_person": bool(dist.mean() < DLIB_THRESHOLD)}
        if probs is not None:
            out["expression"] = {k: round(float(v), 3) for k, v in zip(EXPRESSIONS, probs[0])}
            out["expression_before"] = {k: round(float(v), 3) for k, v in zip(EXPRESSIONS, probs[1])}
        return out


def scorecard_text(score: dict, request: str) -> str:
    """The scorecard as Markdown."""
    d = score["identity_distance"]
    lines = [f"**Request:** {request}",
             f"**Identity:** face-api distance to the input photo{'s' if len(d) > 1 else ''} "
             f"{', '.join(f'{v:.3f}' for v in d)} (same person below {score['threshold']:g})"]
    if not score["same_person"]:
        lines.append(f"**Warning:** the mean distance {np.mean(d):.3f} is above the verification threshold "
                     f"{score['threshold']:g}: face-api would not call this the same person. Try a lower intensity, "
                     "another seed, or more photos of the person.")
    if "expression" in score:
        top = sorted(score["expression"].items(), key=lambda kv: -kv[1])[:3]
        before = max(score["expression_before"].items(), key=lambda kv: kv[1])
        lines.append("**Expression classifier (face-api) reads:** " + ", ".join(f"{k} {v:.2f}" for k, v in top)
                     + f" (the photo before: {before[0]} {before[1]:.2f})")
    return "  \n".join(lines)


def describe_expression(expression: str | None) -> str:
    """What an expression word resolves to, in one line (its recipe and the vocabulary's reason)."""
    if not expression:
        return "neutral face (no expression chosen)"
    from mien.expression.vocabulary import Vocabulary

    recipe = Vocabulary.load().resolve(expression)
    why = f": {recipe.reason}" if recipe.reason else ""
    return f"**{expression}** → `{recipe.text()}` ({recipe.source}){why}"


def check_person(person: str) -> None:
    """``--person``: a `mien personalize` folder, checked before anything loads (one-line errors)."""
    from mien.personalize.lora import read_card

    read_card(person)


def _thumbnail(photo: np.ndarray, box, size: int = 128) -> np.ndarray:
    """The face's box with a margin, resized to ``size``."""
    from PIL import Image

    x0, y0, x1, y1 = box
    m = 0.25 * max(x1 - x0, y1 - y0)
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = int(max(0, x0 - m)), int(max(0, y0 - m)), int(min(w, x1 + m)), int(min(h, y1 + m))
    return np.asarray(Image.fromarray(photo[y0:y1, x0:x1]).resize((size, size)))
