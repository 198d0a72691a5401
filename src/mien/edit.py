"""The library workflow: photos of a person + a request -> that person with the expression, put back into
their photo, with the metadata that says how it was made.

:class:`Editor` is the one path `mien generate`, `mien evaluate --generator built-in`, the web UI and any
service take::

    editor = Editor.from_pretrained()                      # every net loaded here, once
    subject = editor.prepare([load_rgb("me.jpg")])         # align, identity condition (face=N: another face)
    result = editor.edit(subject, parse_request("happy"), GenerationSettings(), n=4, seed=0)
    result.crops, result.photos, result.metadata           # 128 px faces, pasted photos, one dict per image
    swapped = editor.swap(subject, load_rgb("scene.jpg"), parse_request("happy"))  # the person put into a scene

A swap (:meth:`Editor.swap`, ``mien generate --into``) is the same edit started from another photo's face:
``edit(subject, request, into=editor.scene(scene_photo))``; the pipeline moves that face from its own person
and expression to the subject's person and the request (:meth:`mien.pipeline.MienPipeline.__call__`,
docs/swap.md), and the paste puts it back into the scene photo.

Built once, an editor is safe to share between threads: it changes no state per request (the pipeline's
nets are loaded at construction and only read), and the MediaPipe landmarker, whose task objects are not
documented as thread-safe, is called under a lock. :meth:`Editor.prepare` keeps the last few subjects it
prepared, keyed by the photos' pixels, so a service asked for many edits of the same photos (the web UI's
expression sheet) aligns and encodes them once. The paste back into the photo is one function call
(:data:`mien.paste.Paste`; by default full-resolution detail transfer, :mod:`mien.detail`), replaceable
with ``Editor(pipeline, paste=...)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from mien.editing import ProgressCallback
from mien.paste import Paste, paste_detail
from mien.pipeline import AlignedPhotos, Generation, IdentityInput, MienPipeline, align_photos, reference_blendshapes
from mien.settings import GenerationSettings


def _takes(paste: Paste, name: str, any_keyword: bool = True) -> bool:
    """Whether a paste function accepts the keyword ``name`` (a four-argument paste is called without it);
    ``any_keyword``: a paste with ``**kwargs`` counts too."""
    import inspect

    try:
        params = inspect.signature(paste).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or (any_keyword and p.kind is p.VAR_KEYWORD) for p in params)


class SerialLandmarker:
    """A landmarker whose calls run one at a time (MediaPipe's task objects keep per-call state)."""

    def __init__(self, landmarker):
        self.landmarker = landmarker
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray, max_faces: int | None = None) -> list:
        with self._lock:
            return self.landmarker.detect(rgb, max_faces=max_faces) if max_faces else self.landmarker.detect(rgb)

    def close(self) -> None:
        with self._lock:
            self.landmarker.close()


def align_scene(landmarker, photo: np.ndarray, face: int = 0, name: str = "scene photo") -> AlignedPhotos:
    """A swap's scene photo aligned on its face ``face``; NoFaceError (one line, naming the photo) when it has
    no such face. Needs only the landmarker, so a faceless scene is reported before the models load."""
    from mien.errors import NoFaceError
    from mien.pipeline import align_photo_matrix

    try:
        crop, found, matrix = align_photo_matrix(landmarker, photo, face)
    except NoFaceError as e:
        raise NoFaceError(f"{name} (the scene to swap into): {e}") from None
    return AlignedPhotos([crop], [found], [], [matrix], [0])


@dataclass(frozen=True)
class Subject:
    """A person prepared for editing: the identity condition and the photo that is edited."""

    identity: IdentityInput
    photo: np.ndarray  # the photo edited (the first usable one), uint8 RGB
    matrix: np.ndarray  # its 2x3 photo -> 128 px crop matrix
    source: int  # its index among the photos given
    face: int = 0  # which face of each photo (0: the largest)
    skipped: tuple[str, ...] = ()  # "name: reason" for each photo without a usable face
    landmarks: np.ndarray | None = None  # (478, 3) MediaPipe landmarks of the edited face, photo pixels

    @classmethod
    def from_aligned(cls, identity: IdentityInput, photos: list[np.ndarray], aligned: AlignedPhotos,
                     face: int = 0) -> "Subject":  # fmt: skip
        landmarks = getattr(aligned.faces[0], "landmarks", None) if aligned.faces else None
        return cls(identity, photos[aligned.sources[0]], aligned.matrices[0], aligned.sources[0], face,
                   tuple(aligned.skipped), landmarks)  # fmt: skip


@dataclass
class EditResult:
    """What :meth:`Editor.edit` returns: per image the 128 px crop, the photo with it pasted in (None when
    not pasted) and its metadata (request, seed, resolved settings, model hash, face)."""

    crops: list[np.ndarray]
    photos: list[np.ndarray] | None
    metadata: list[dict]
    generation: Generation
    subject: Subject = field(repr=False)
    scene: Subject | None = field(default=None, repr=False)  # a swap's scene (its photo is the one pasted into)

    def save(self, out) -> list:
        """Write the images into folder ``out`` as ``mien generate`` does (:func:`mien.io.output.save_result`:
        each with its metadata and the watermark); returns their paths. The arrays themselves carry no mark:
        to write them another way, use :func:`mien.io.provenance.save_image`."""
        from mien.io.output import save_result

        return save_result(out, self)


def _photos_key(photos: list[np.ndarray], names: list[str] | None, face: int) -> tuple:
    """What :meth:`Editor.prepare`'s result depends on: the photos' pixels (a digest), their names, the face."""
    h = hashlib.blake2b(digest_size=16)
    for photo in photos:
        photo = np.ascontiguousarray(photo)
        h.update(f"{photo.shape}{photo.dtype}".encode())
        h.update(memoryview(photo).cast("B"))
    return h.hexdigest(), tuple(names) if names else None, face


class Editor:
    """The generation workflow around a :class:`mien.pipeline.MienPipeline` (module docstring)."""

    PREPARED_KEPT = 4  # subjects :meth:`prepare` keeps for photos asked for again

    def __init__(self, pipeline: MienPipeline, paste: Paste | None = None):
        if not isinstance(pipeline.landmarker, SerialLandmarker):
            pipeline.landmarker = SerialLandmarker(pipeline.landmarker)  # once, at construction
        self.pipeline = pipeline
        self.paste: Paste = paste or paste_detail
        self._paste_landmarks = _takes(self.paste, "landmarks")
        # the decoder's reconstruction of the unedited crop (one decode), only for a paste that names it
        self._paste_reconstruction = (_takes(self.paste, "reconstruction", any_keyword=False)
                                      and getattr(self.paste, "uses_reconstruction", True))  # fmt: skip
        self._prepared: OrderedDict[tuple, Subject] = OrderedDict()  # photo=None: the caller's array is not kept
        self._prepared_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, model: str = "default", device: str = "cpu", landmarker=None,
                        paste: Paste | None = None, person=None) -> "Editor":  # fmt: skip
        """An editor on the built-in model (``"default"``) or a saved model folder; ``landmarker``: one
        already opened (the editor then owns it); ``person``: a `mien personalize` folder (its LoRA)."""
        return cls(MienPipeline.from_pretrained(model, device=device, landmarker=landmarker, person=person), paste)

    @property
    def model_hash(self) -> str:
        return self.pipeline.model_hash

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> "Editor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inputs -----------------------------------------------------------------------------------
    def detect(self, photo: np.ndarray, max_faces: int = 4) -> list:
        """The faces MediaPipe finds in a photo, largest first (:class:`mien.face.landmarker.Face`: box,
        landmarks, blendshapes, pose); their index is the ``face`` the other methods take."""
        return self.pipeline.landmarker.detect(photo, max_faces=max_faces)

    def align(self, photos: list[np.ndarray], names: list[str] | None = None, face: int = 0) -> AlignedPhotos:
        """Each photo's face aligned (skipping photos without one; NoFaceError when none has one)."""
        return align_photos(self.pipeline.landmarker, photos, names, face)

    def prepare(self, photos: list[np.ndarray], names: list[str] | None = None, face: int = 0) -> Subject:
        """A subject from photos of one person: each photo's face ``face`` (0: the largest) aligned, photos of
        someone else left out (:meth:`MienPipeline.one_person`; named in the subject's ``skipped``) and the
        identity vectors combined; the first usable photo is the one edited. Photos with the same pixels, names
        and face as one of the last :attr:`PREPARED_KEPT` calls give that call's subject without the work."""
        key = _photos_key(photos, names, face)
        with self._prepared_lock:
            kept = self._prepared.get(key)
            if kept is not None:
                self._prepared.move_to_end(key)
        if kept is not None:
            return dataclasses.replace(kept, photo=photos[kept.source])
        subject = self.subject(photos, self.pipeline.one_person(self.align(photos, names, face), names), face)
        with self._prepared_lock:
            self._prepared[key] = dataclasses.replace(subject, photo=None)
            while len(self._prepared) > self.PREPARED_KEPT:
                self._prepared.popitem(last=False)
        return subject

    def subject(self, photos: list[np.ndarray], aligned: AlignedPhotos, face: int = 0) -> Subject:
        """A subject from photos aligned (:meth:`align`, or :func:`mien.pipeline.align_photos`) and checked to
        show one person (:meth:`MienPipeline.one_person`) already."""
        return Subject.from_aligned(self.pipeline.identity_input(aligned), photos, aligned, face)

    def reference(self, photo: np.ndarray, face: int = 0) -> np.ndarray:
        """The expression of a reference photo (``--like``): its face's blendshapes; its identity is not used."""
        return reference_blendshapes(self.pipeline.landmarker, photo, face)

    # -- the edit ---------------------------------------------------------------------------------
    def edit(self, subject: Subject, request, settings: GenerationSettings | None = None, n: int = 1, seed: int = 0,
             paste: bool = True, callback: ProgressCallback | None = None,
             into: Subject | None = None) -> EditResult:  # fmt: skip
        """``n`` images of ``subject`` with ``request`` (image i from seed ``seed + i``), each pasted back into
        the subject's photo unless ``paste`` is False; ``callback(step, total, info)`` once per sampler step.
        ``into``: another person's prepared photo to put the subject into instead (a swap: the edit starts
        from its face and is pasted into its photo; :meth:`swap`)."""
        scene = into or subject
        gen = self.pipeline(subject.identity, request, settings, n=n, seed=seed, callback=callback,
                            scene=None if into is None else into.identity)  # fmt: skip
        photos = None
        if paste:
            extra = {"landmarks": scene.landmarks} if self._paste_landmarks else {}
            if self._paste_reconstruction:
                extra["reconstruction"] = self.pipeline.reconstruction(scene.identity)
            photos = [self.paste(scene.photo, image, scene.matrix, gen.settings.keep, **extra) for image in gen.images]
        where = {} if into is None else {"into_face": into.face}
        metadata = [{**gen.metadata(s), "face": subject.face, **where} for s in gen.seeds]
        return EditResult(gen.images, photos, metadata, gen, subject, into)

    def swap(self, subject: Subject, scene_photo: np.ndarray, request=None, settings: GenerationSettings | None = None,
             face: int = 0, n: int = 1, seed: int = 0, paste: bool = True, callback: ProgressCallback | None = None,
             name: str = "scene photo") -> EditResult:  # fmt: skip
        """``subject`` put into ``scene_photo`` in place of its face ``face`` (0: the largest), keeping the scene's
        head pose, lighting and everything outside the face, with ``request``'s expression; ``request`` None
        (or an empty one) keeps the scene face's own expression: a plain swap. NoFaceError (one line) when the
        scene has no such face."""
        scene = self.scene(scene_photo, face, name)
        return self.edit(subject, self.scene_request(request, scene), settings, n=n, seed=seed, paste=paste,
                         callback=callback, into=scene)  # fmt: skip

    def scene(self, photo: np.ndarray, face: int = 0, name: str = "scene photo") -> Subject:
        """A swap's scene: the photo's face ``face`` (0: the largest) prepared like a subject; NoFaceError
        (one line, naming the photo) when it has no such face."""
        return self.subject([photo], align_scene(self.pipeline.landmarker, photo, face, name), face)

    @staticmethod
    def scene_request(request, scene: Subject):
        """``request``, or the scene face's own expression when it asks for none (no label, AU or reference)."""
        from mien.expression.targets import scene_request

        return scene_request(request, scene.identity.blendshapes)
