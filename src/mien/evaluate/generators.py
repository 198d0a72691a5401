"""What `mien evaluate` runs: anything that turns identity photos and a request into a face image.

The contract (:class:`Generator`) is one method, ``generate(identity_images, request, seed) -> RGB``,
where ``request`` is a :class:`Condition`: the benchmark request with everything a model needs
already resolved (the recipe of a label or term, the AU vector, the reference photo's pixels). A
generator that cannot serve a request raises :class:`Unsupported`; the run records it and moves on.

Optional, for the trade-off curve: ``guidance_scales`` (a sequence of floats) and
``with_guidance(scale) -> Generator``; the run then sweeps the scales (see ``run.guidance_sweep``).
``model_hash`` (a string or None) is written into results.json.

Baselines (the issue's two reference points):
  copy   returns the first identity photo: perfect identity, no expression change (the floor for
         expression, the ceiling for identity);
  real   returns a real photo of that person showing the requested expression when the benchmark
         has one (the ceiling for expression);
  taef2  returns the first identity photo after a round trip through TAEF2 with the built-in model's
         decoder: no edit, only what the autoencoder costs (the floor for the realism critic).
The built-in model registers itself as "built-in" (:func:`register`) once it exists.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mien.errors import MienError
from mien.evaluate.benchmark import Benchmark, Photo, Request


class Unsupported(Exception):
    """The generator cannot serve this request (not an error: counted and reported as unsupported)."""


@dataclass(frozen=True)
class Condition:
    """A benchmark request, resolved for a generator."""

    request: Request
    identity: str  # benchmark identity id; for data-backed baselines only; a model must not use it
    basic: dict[str, float] = field(default_factory=dict)  # label/term: basic-expression mix, 0-1
    aus: dict[str, float] = field(default_factory=dict)  # AU levels 0-5 (aus requests, and terms' extras)
    reference: np.ndarray | None = None  # like: the reference photo, uint8 RGB
    reference_label: str | None = None  # like: the reference photo's label when the data has one

    @property
    def label(self) -> str | None:
        """The basic label this request is scored against (None when it has none)."""
        if self.request.kind == "like":
            return self.reference_label
        return max(self.basic, key=self.basic.get) if self.basic else None


@runtime_checkable
class Generator(Protocol):
    name: str
    description: str
    model_hash: str | None

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray: ...


class CopyGenerator:
    name = "copy"
    description = "returns the first identity photo unchanged: perfect identity, no expression change"
    model_hash = None

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray:
        return identity_images[0]


class RealGenerator:
    """A real photo of the person with the requested label: a scoring photo when one has it, else an
    identity photo; the seed picks among several. Terms use their dominant label, reference requests
    the reference's label; intensity is whatever the photo shows. AU requests are unsupported (no
    photo here has AU labels)."""

    name = "real"
    description = ("returns a real photo of the person showing the requested label (ceiling); terms use "
                   "their dominant label, references their label; AU requests unsupported")
    model_hash = None

    def __init__(self, benchmark: Benchmark):
        self.benchmark = benchmark
        self._photos = {i.id: (i.scoring_photos, i.identity_photos) for i in benchmark.identities}

    def pick(self, request: Condition, seed: int) -> Photo:
        if request.request.kind == "aus":
            raise Unsupported("no real photo has Action Unit labels")
        label = request.label
        if label is None:
            raise Unsupported("the reference photo has no expression label")
        scoring, identity = self._photos[request.identity]
        for pool in (scoring, identity):
            candidates = [p for p in pool if p.label == label]
            if candidates:
                return candidates[seed % len(candidates)]
        raise Unsupported(f"no real '{label}' photo of the person")  # no id: failures are grouped by reason

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray:
        return self.benchmark.image(self.pick(request, seed))


class ImagesGenerator:
    """Scores images made elsewhere: ``DIR/<item>.png``, named as ``mien evaluate`` names its own outputs
    (:func:`mien.evaluate.run.output_name`; an earlier run's ``outputs/`` folder qualifies). Any method's
    outputs can be scored this way, and mien's own from a GPU machine (python -m mien.evaluate.gpu_generate), whose
    ``generate.json`` beside the images gives the description and model hash. A missing image is an
    item error, reported like any other."""

    name = "images"

    def __init__(self, folder: str | Path):
        import json

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MienError(f"--images {folder}: no such folder; give the folder that holds the output PNGs")
        meta_path = self.folder / "generate.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        self.model_hash = meta.get("model_hash")
        made = f"; {meta['description']}" if meta.get("description") else ""
        self.description = f"images read from {self.folder.name}/{made}"

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray:
        from mien.evaluate.run import output_name
        from mien.io.image import load_rgb

        path = self.folder / output_name(request.identity, request.request.id, seed)
        if not path.is_file():
            raise MienError(f"no image {path.name} in {self.folder}")
        return load_rgb(path)


class TAEF2Generator:
    """The first identity photo encoded and decoded by TAEF2 with the model's decoder (the pretrained
    one when the model has none): what the built-in model's autoencoder alone does to a face."""

    name = "taef2"

    def __init__(self, model: str = "default"):
        import json

        from mien.models.taef2 import TAEF2
        from mien.pipeline import default_model_dir

        folder = default_model_dir() if model == "default" else Path(model)
        try:
            decoder = json.loads((folder / "config.json").read_text()).get("decoder")
        except (OSError, ValueError) as e:
            raise MienError(f"--model {model}: cannot read its config.json ({e}); give a mien model folder") from None
        self.decoder_path = folder / decoder if decoder else None
        self.taef2 = TAEF2.from_weights(decoder_path=self.decoder_path)
        self.model_hash = None
        self.description = (f"TAEF2 round trip of the first identity photo, decoder "
                            f"{self.decoder_path.name if self.decoder_path else 'pretrained'}")

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(identity_images[0])).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = self.taef2(x)[0].permute(1, 2, 0).numpy()
        return np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8)


class BuiltinGenerator:
    """mien's built-in model through the library workflow (:class:`mien.edit.Editor`) with ``settings``
    (:class:`mien.settings.GenerationSettings`; default: `mien generate`'s)."""

    name = "built-in"
    guidance_scales = (1.0, 2.0, 3.0, 5.0)  # expression guidance scales of the trade-off sweep

    def __init__(self, model: str = "default", device: str = "cpu", editor=None, settings=None):
        from mien.edit import Editor
        from mien.settings import GenerationSettings

        self.settings = settings or GenerationSettings()  # validated before the model loads
        self.editor = editor or Editor.from_pretrained(model, device=device)
        self.model_hash = self.editor.model_hash
        self._subjects: dict[bytes, object] = {}

    @property
    def description(self) -> str:
        given = ", ".join(f"{k} {'per request' if v is None else v}" for k, v in self.settings.to_dict().items())
        return f"mien's built-in model: {given}"

    def with_guidance(self, scale: float) -> "BuiltinGenerator":
        """The same model at expression guidance ``scale`` (the trade-off sweep); identities are re-used."""
        other = BuiltinGenerator(editor=self.editor, settings=dataclasses.replace(self.settings, guidance_expression=scale))
        other._subjects = self._subjects
        return other

    def generate(self, identity_images: list[np.ndarray], request: Condition, seed: int) -> np.ndarray:
        import hashlib

        from mien.expression.targets import ExpressionRequest

        key = hashlib.sha256(b"".join(im.tobytes() for im in identity_images)).digest()
        if key not in self._subjects:  # aligning + embedding once per person
            self._subjects[key] = self.editor.prepare(identity_images)
        like = self.editor.reference(request.reference) if request.reference is not None else None
        req = ExpressionRequest(mix=dict(request.basic), aus=dict(request.aus), like=like)
        return self.editor.edit(self._subjects[key], req, self.settings, n=1, seed=seed, paste=False).crops[0]


def _builtin(benchmark: Benchmark, model: str | None = None, images: str | None = None, **settings) -> Generator:
    if images is not None:
        raise MienError("--images: generator 'built-in' generates its own images; drop it or use --generator images")
    from mien.settings import GenerationSettings

    return BuiltinGenerator(model or "default", settings=GenerationSettings(**settings))


Factory = Callable[[Benchmark], Generator]
GENERATORS: dict[str, Factory] = {
    "built-in": _builtin,
    "copy": lambda benchmark: CopyGenerator(),
    "real": RealGenerator,
    "taef2": lambda benchmark, model=None: TAEF2Generator(model or "default"),
    "images": lambda benchmark, images=None: _images(images),
}


def _images(folder: str | None) -> Generator:
    if folder is None:
        raise MienError("--generator images needs --images DIR, the folder of output PNGs to score")
    return ImagesGenerator(folder)


def register(name: str, factory: Factory) -> None:
    """Make ``mien evaluate --generator NAME`` build a generator with ``factory(benchmark)``."""
    GENERATORS[name] = factory


def create(name: str, benchmark: Benchmark, **options) -> Generator:
    """The generator ``name``; ``options`` (model folder, guidance scales: None = default) only for
    generators that take them."""
    try:
        factory = GENERATORS[name]
    except KeyError:
        raise MienError(f"unknown generator '{name}'; choose from {', '.join(GENERATORS)}") from None
    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in options:
        if key not in params and not takes_any:
            flag = "--" + key.replace("_", "-")
            raise MienError(f"{flag}: generator '{name}' has no such setting; drop it or use --generator built-in")
    return factory(benchmark, **options)


def guidance_scales(generator: Generator) -> Sequence[float]:
    """The generator's guidance scales for the trade-off sweep (empty when it has none)."""
    scales = getattr(generator, "guidance_scales", None)
    return tuple(scales) if scales and hasattr(generator, "with_guidance") else ()
