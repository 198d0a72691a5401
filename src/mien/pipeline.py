"""`MienPipeline`: photos of a person + an expression request → that person with that expression.

The pipeline only composes (STYLE.md 9): face alignment (:mod:`mien.face`), the identity condition
(:class:`mien.models.identity.IdentityEncoder` on the aligned 128 px crop, exactly as the training
data was conditioned), the expression target (:mod:`mien.expression.targets`), the built-in model
(:mod:`mien.builtin`), the generation settings (:mod:`mien.settings`), guidance (:mod:`mien.guidance`)
and an edit method with a pure sampler (:mod:`mien.editing`, :mod:`mien.sampling`), TAEF2 decoding.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mien.editing import ProgressCallback
from mien.errors import FaceTooSmallError, MienError, NoFaceError
from mien.lora_rows import ROW_SCALE_STREAM
from mien.settings import GenerationSettings
from mien.threads import generating, native_bfloat16

DEFAULT_MODEL = "default"


def default_model_dir() -> Path:
    return Path(str(resources.files("mien") / "resources" / "model"))


@dataclass
class IdentityInput:
    crops: list[np.ndarray]  # aligned 128 px crops, one per usable photo
    vector: torch.Tensor  # (128,) the identity condition
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees of the first usable photo (the one edited)
    blendshapes: np.ndarray  # (52,) that photo's own expression (FlowEdit's source)
    skipped: list[str] = field(default_factory=list)
    latent: torch.Tensor | None = None  # (32, 16, 16) raw TAEF2 latent of that photo
    embedding: torch.Tensor | None = None  # (192,) unit MobileFaceNet embedding of all the photos (recogniser guidance)


@dataclass
class AlignedPhotos:
    crops: list[np.ndarray]  # aligned 128 px crops, one per usable photo
    faces: list  # their MediaPipe faces (pose, blendshapes)
    skipped: list[str] = field(default_factory=list)  # "name: reason" for each photo without a usable face
    matrices: list[np.ndarray] = field(default_factory=list)  # their 2x3 photo -> crop matrices (paste_back)
    sources: list[int] = field(default_factory=list)  # index of each usable photo in the photos given


def rows_of(values: list[torch.Tensor], n: int) -> torch.Tensor:
    """(len(values) * n, ...): each value (a person's) repeated over its n rows, one value after another, in the
    memory layout of the first (TAEF2's latents are channels-last; the UNet's float sums depend on the layout).
    One value is only expanded."""
    rows = [v[None].expand(n, *v.shape) for v in values]
    if len(rows) == 1:
        return rows[0]
    channels_last = rows[0].dim() == 4 and values[0][None].is_contiguous(memory_format=torch.channels_last)
    return torch.cat(rows).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def align_photo(landmarker, rgb: np.ndarray, face: int = 0) -> tuple[np.ndarray, object]:
    """(aligned 128 px crop, MediaPipe face) of a face in a photo (``face``: 0 the largest, 1 the next...)."""
    crop, found, _ = align_photo_matrix(landmarker, rgb, face)
    return crop, found


# The smallest face (the larger side of its landmark box, photo pixels) mien edits: below it the 128 px crop
# would be an upscale of fewer than half its pixels, and the edit has no detail of the photo to keep.
MIN_FACE_PX = 64


def align_photo_matrix(landmarker, rgb: np.ndarray, face: int = 0) -> tuple[np.ndarray, object, np.ndarray]:
    """(aligned 128 px crop, MediaPipe face, 2x3 photo -> crop matrix) of a face in a photo (``face``: 0 the
    largest, 1 the next...)."""
    from mien.face import align
    from mien.io.image import check_face_size

    check_face_size(rgb)
    faces = landmarker.detect(rgb) if face == 0 else landmarker.detect(rgb, max_faces=face + 1)
    if not faces:
        raise NoFaceError("no face found; use a photo where the face is visible, frontal-ish and well lit")
    if face >= len(faces):
        raise NoFaceError(f"face {face} asked for, but only {len(faces)} found (0 is the largest); choose a face "
                          f"from 0 to {len(faces) - 1}")
    x0, y0, x1, y1 = faces[face].box
    if max(x1 - x0, y1 - y0) < MIN_FACE_PX:
        raise FaceTooSmallError(f"face {face} is {max(x1 - x0, y1 - y0):.0f} px across, under the {MIN_FACE_PX} px mien "
                                "needs to edit it; use a larger or closer photo of the face")  # fmt: skip
    crop, m = align.align_face(rgb, align.five_points(faces[face].landmarks), 128)
    return crop, faces[face], m


def reference_blendshapes(landmarker, rgb: np.ndarray, face: int = 0) -> np.ndarray:
    """The expression of a reference photo (``--like``): its blendshapes; its identity is not used."""
    return align_photo(landmarker, rgb, face)[1].blendshapes


def align_photos(landmarker, photos: list[np.ndarray], names: list[str] | None = None, face: int = 0) -> AlignedPhotos:
    """Align every photo that has a face (``face``: which one, 0 the largest); NoFaceError when none has.
    Needs only the landmarker, so the CLI finds a faceless photo before it spends seconds loading the models."""
    names = names or [f"photo {i + 1}" for i in range(len(photos))]
    out = AlignedPhotos([], [])
    for i, (name, rgb) in enumerate(zip(names, photos)):
        try:
            crop, found, m = align_photo_matrix(landmarker, rgb, face)
        except NoFaceError as e:
            out.skipped.append(f"{name}: {e}")
            continue
        out.crops.append(crop)
        out.faces.append(found)
        out.matrices.append(m)
        out.sources.append(i)
    if not out.crops:
        raise NoFaceError("no usable face in any identity photo (" + "; ".join(out.skipped) + ")")
    return out


def check_swap_settings(settings: GenerationSettings, swap: bool = True) -> None:
    """A swap (``--into``) is a FlowEdit from the scene's face that keeps the scene outside it: a one-line
    MienError for the settings that would do otherwise; an edit (not ``swap``) takes no swap reference."""
    if not swap:
        if settings.swap_reference not in (None, "identity"):
            raise MienError(f"--swap-reference {settings.swap_reference} works with --into (a swap); drop it for an "
                            "edit")
        return
    if settings.method != "flowedit":
        raise MienError(f"--into swaps by a FlowEdit from the scene's face; drop --method {settings.method}")
    if settings.keep != "background":
        raise MienError(f"--into keeps the scene photo outside the face; drop --keep {settings.keep}")


@dataclass
class Generation:
    images: list[np.ndarray]  # uint8 128x128x3
    seeds: list[int]
    request: str
    expression: np.ndarray  # (55,) the conditioning vector used; (P, 55), one per person, for P people
    settings: GenerationSettings  # resolved: every value concrete
    model_hash: str = ""
    latents: torch.Tensor | None = None  # (n, 32, 16, 16) raw TAEF2 latents of the images
    person: str = ""  # the person adapter's hash (its first 12 hex digits) when one was loaded
    threads: int = 0  # CPU threads it ran on (0: a GPU); float sums, so the last bits of pixels, follow the count

    def metadata(self, seed: int) -> dict:
        """What an output image records: its request, seed, resolved settings, model hash (and person adapter),
        and the CPU threads, without which the same seed can differ in rounding (docs/performance.md, "Threads")."""
        meta = {"request": self.request, "seed": seed, **self.settings.to_dict(), "model_hash": self.model_hash,
                **({"threads": self.threads} if self.threads else {})}
        return {**meta, "person": self.person} if self.person else meta


class MienPipeline:
    """The built-in model and the nets generation needs, all loaded at construction (no state changes per
    request, so one pipeline serves concurrent requests; the landmarker is the caller's to serialise)."""

    def __init__(self, model, taef2, identity, landmarker, model_dir: Path, device: torch.device, blendshapes=None):
        self.model, self.taef2, self.identity, self.landmarker = model, taef2, identity, landmarker
        self.model_dir, self.device = Path(model_dir), device
        if blendshapes is None:  # blendshape guidance's nets: MediaPipe's mesh and blendshapes in PyTorch
            from mien.models.face_mesh import AlignedBlendshapes

            with torch.inference_mode(False):  # weights made under a caller's inference_mode could not enter autograd
                blendshapes = AlignedBlendshapes.from_weights().to(device)
        self.blendshape_net = blendshapes
        self.nets = {"taef2": taef2, "identity": identity, "blendshapes": blendshapes}
        self.native_bfloat16 = native_bfloat16(device)  # critic guidance's default number format
        self.model_hash = model.sha256[:12]
        from mien.expression.aus import AUCalibration
        from mien.expression.basic import Prototypes

        self.prototypes, self.calibration = Prototypes.load(), AUCalibration.load()
        self.person: dict | None = None  # the card of the person adapter loaded (load_person)
        self.person_hash = ""

    def load_person(self, directory: str | Path) -> dict:
        """Load a person's LoRA (a `mien personalize` folder) into the model; a folder made on another base
        model is a one-line error. Call it before serving requests (it changes the model)."""
        from mien.checksums import sha256_of
        from mien.personalize.lora import ADAPTER_WEIGHTS, load_person

        with torch.inference_mode(False):
            self.person = load_person(self.model.backbone.unet, directory, self.model.sha256)
        self.model.backbone.unet.to(self.device)
        self.person_hash = sha256_of(Path(directory) / ADAPTER_WEIGHTS)[:12]
        return self.person

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_MODEL, device: str = "cpu", landmarker=None,
                        person: str | Path | None = None) -> "MienPipeline":  # fmt: skip
        """Load the built-in model (``"default"``: the one shipped inside the package) and its helpers;
        ``landmarker``: a FaceLandmarker already opened (the pipeline then owns it and closes it);
        ``person``: a `mien personalize` folder whose LoRA the model takes."""
        from mien.builtin.model import MienModel
        from mien.models.identity import IdentityEncoder
        from mien.models.taef2 import TAEF2

        model_dir = default_model_dir() if str(path) == DEFAULT_MODEL else Path(path)
        dev = torch.device(device)
        # weights made under a caller's inference_mode could not enter the guidance's autograd
        with torch.inference_mode(False):
            model = MienModel.from_pretrained(model_dir).to(dev).eval()
            taef2 = TAEF2.from_weights(decoder_path=model.decoder_path).to(dev).eval()  # the model's own decoder, if any
            identity = IdentityEncoder.from_weights().to(dev)  # face-api (the condition), MobileFaceNet (guidance)
        if landmarker is None:  # imported here: a caller with its own (or no MediaPipe, e.g. on a GPU host) passes one
            from mien.face.landmarker import FaceLandmarker

            landmarker = FaceLandmarker(num_faces=2)
        pipe = cls(model, taef2, identity, landmarker, model_dir, dev)
        if person is not None:
            pipe.load_person(person)
        return pipe

    def close(self) -> None:
        self.landmarker.close()

    # -- inputs -----------------------------------------------------------------------------------
    def align(self, rgb: np.ndarray) -> tuple[np.ndarray, object]:
        """(aligned 128 px crop, MediaPipe face) of the largest face in a photo."""
        return align_photo(self.landmarker, rgb)

    def prepare_identity(self, photos: list[np.ndarray], names: list[str] | None = None) -> IdentityInput:
        """Align each photo, leave out those of someone else (:meth:`one_person`) and combine the identity
        vectors of the rest (:meth:`identity_input`)."""
        return self.identity_input(self.one_person(align_photos(self.landmarker, photos, names), names))

    def one_person(self, aligned: AlignedPhotos, names: list[str] | None = None, skip=None) -> AlignedPhotos:
        """``aligned`` less the photos of someone else, each named in its ``skipped`` and through ``skip(name,
        reason)`` (:func:`mien.face.one_person.keep_one_person`). MienError (one line) when the photos show no
        one person."""
        from mien.face.one_person import keep_one_person

        return keep_one_person(aligned, names, self.identity, skip)

    @torch.no_grad()
    def identity_input(self, aligned: AlignedPhotos) -> IdentityInput:
        """The identity condition of aligned photos: their identity vectors combined (mean, renormalised:
        DESIGN.md).

        The first usable photo is the one edited and the spatial reference (its latent): averaging
        latents of different photos would blur them, so its head pose and own expression are the ones
        the edit starts from; the other photos still count through the identity vector.
        """
        x = torch.from_numpy(np.stack(aligned.crops)).permute(0, 3, 1, 2).float().to(self.device)
        vec = F.normalize(self.identity.condition(x).mean(0), dim=0)
        latent = self.taef2.encode(x[:1] / 255)[0]  # the spatial reference and the photo an edit starts from
        emb = None
        if self.identity.mobilefacenet is not None:  # recogniser guidance's target: every photo counts, like the condition
            emb = F.normalize(self.identity.mobilefacenet_unit(x).mean(0), dim=0)
        face = aligned.faces[0]
        return IdentityInput(aligned.crops, vec, np.asarray(face.pose), face.blendshapes, aligned.skipped, latent, emb)

    def reconstruction(self, person: IdentityInput) -> np.ndarray:
        """(128, 128, 3) uint8: the decoder's reconstruction of the photo an edit of ``person`` starts from (its
        latent decoded, rounded as the edits are): what an edit equals where it changes nothing, the decoder's own
        error included (:class:`mien.detail.DetailSettings` ``reference="decoded"``)."""
        with torch.no_grad():
            rgb = self.taef2.decode(person.latent[None].to(self.device)).clamp(0, 1)
        return (rgb[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def reference_blendshapes(self, rgb: np.ndarray) -> np.ndarray:
        """The expression of a reference photo (``--like``): its blendshapes; its identity is not used."""
        return reference_blendshapes(self.landmarker, rgb)

    # -- generation -------------------------------------------------------------------------------
    def _identity_streams(self, person: IdentityInput | list[IdentityInput], n: int) -> dict[str, torch.Tensor]:
        """A person's identity stream for n rows: the identity vector and (for models with one) the spatial
        reference, the latent of their first usable photo; for a list of people, n rows each, one after another."""
        people = [person] if isinstance(person, IdentityInput) else person
        out = {"identity": rows_of([p.vector for p in people], n).to(self.device)}
        if self.model.config.reference:
            out["reference"] = rows_of([p.latent for p in people], n).to(self.device)
        return out

    def _person_lora_rows(self, s: GenerationSettings, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The loaded person's LoRA scale on FlowEdit's n source rows and n target rows (every row of sdedit
        takes the target's); None when no person is loaded or every row takes the LoRA as loaded.

        Why 'target' (``--person-rows``): FlowEdit moves the photo by v(request) - v(photo's own expression);
        with the LoRA in both terms, what it learned of how the person looks changes both alike and cancels
        (docs/personalize.md, "Why the personalised model is no nearer")."""
        if self.person is None or (s.person_rows == "both" and s.person_scale == 1.0):
            return None
        target = torch.full((n,), float(s.person_scale), device=self.device)
        return (torch.zeros_like(target) if s.person_rows == "target" else target), target

    def __call__(self, identity: IdentityInput | list[IdentityInput], request,
                 settings: GenerationSettings | None = None, n: int = 1, seed: int | list[int] = 0,
                 callback: ProgressCallback | None = None,
                 scene: IdentityInput | None = None) -> Generation:  # fmt: skip
        """``n`` images of ``identity`` with the expression of ``request`` (image i from seed ``seed + i``).

        ``identity`` may be a list of people: one batch of ``n`` images of each, person after person, each row
        with its own person's identity streams, photo, pose, own expression and recogniser target, so each
        person's images are theirs alone (what separate calls give, up to float rounding); person k's images
        take the seeds ``seed[k] + i`` (``seed`` a list, one per person) or ``seed + k * n + i``.

        ``settings`` (:class:`mien.settings.GenerationSettings`; default: the defaults) are resolved for the
        request (:meth:`GenerationSettings.resolve`) and recorded in the result. ``method="flowedit"`` moves
        the first identity photo by the difference between the model's predictions for the requested
        expression and for the photo's own (:mod:`mien.editing`); every registered guidance kind
        (:mod:`mien.guidance`) shapes the prediction. ``callback(step, total, info)`` is called once per
        sampler step.

        ``scene``: another person's face to put ``identity`` into (a swap, ``mien generate --into``; FlowEdit
        only). The edit then starts from the scene face and moves it from (the scene person, the scene's
        own expression) to (``identity``, the request), both at the scene's head pose: the source rows
        take the scene's identity vector and spatial reference, the target rows ``identity``'s
        (docs/swap.md says why). Without it the scene is ``identity``'s own first photo: the plain edit.
        """
        with generating(self.device):  # the thread count for this machine's load now (mien.threads)
            return self._generate(identity, request, settings, n, seed, callback, scene)

    @torch.inference_mode()  # no autograd bookkeeping; critic guidance steps out of it (mien.guidance.gradient)
    def _generate(self, identity, request, settings, n, seed, callback, scene) -> Generation:
        """:meth:`__call__`'s work."""
        from mien import editing
        from mien.expression.targets import blendshape_target, expression_vector
        from mien.guidance import GUIDANCE, GuidanceContext, chain
        from mien.guidance.classifier_free import conditioned
        from mien.regions import edit_region, keep_mask

        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise MienError(f"--n {n} must be a whole number of at least 1")
        backbone = self.model.backbone  # the latent shape and the face box are its own
        people = [identity] if isinstance(identity, IdentityInput) else list(identity)
        firsts = [seed + k * n for k in range(len(people))] if isinstance(seed, numbers.Integral) else list(seed)
        if not people or len(firsts) != len(people):
            raise MienError(f"{len(people)} people and {len(firsts)} seeds: give one first seed per person")
        swap = scene is not None and scene is not identity
        if swap and len(people) > 1:
            raise MienError("a swap (--into) puts one person into the scene: edit several people without it")
        scenes = [scene] if swap else people  # the faces that are edited: their latents, poses and own expressions
        scene = scenes[0]
        for name, person in [("identity", p) for p in people] + [("scene", p) for p in scenes]:
            if tuple(person.latent.shape) != backbone.latent_shape:
                raise MienError(f"the {name}'s latent is {tuple(person.latent.shape)} but this model denoises "
                                f"{backbone.latent_shape} latents; prepare the {name} with this pipeline")
        size, box = backbone.latent_shape[1], backbone.face_box
        s = (settings or GenerationSettings()).resolve(request, swap=swap, native_bfloat16=self.native_bfloat16)
        check_swap_settings(s, swap)
        bs = blendshape_target(request, self.prototypes, self.calibration, swap=swap)  # SWAP_LABEL_AUS in a swap
        exprs = [expression_vector(bs, p.pose) for p in scenes]
        target = rows_of([torch.from_numpy(e) for e in exprs], n).float().to(self.device)
        if s.variety > 0:  # each seed its own target around the request (--variety)
            from mien.expression.targets import varied_target

            rows = [expression_vector(varied_target(bs, self.prototypes.neutral, s.variety, first + i), p.pose)
                    for p, first in zip(scenes, firsts) for i in range(n)]
            target = torch.from_numpy(np.stack(rows)).float().to(self.device)
        cond = {**self._identity_streams(people, n), "expression": target}
        if swap and "reference" in cond and s.swap_reference != "identity":  # --swap-reference (docs/swap.md)
            cond["reference"] = (torch.zeros_like(cond["reference"]) if s.swap_reference == "none"
                                 else self._identity_streams(scene, n)["reference"])  # fmt: skip
        seeds = [first + i for first in firsts for i in range(n)]
        photo = rows_of([self.model.normalize(p.latent[None].to(self.device))[0] for p in scenes], n)
        source = None
        if s.method == "flowedit":  # the photos' own expressions
            source = rows_of([torch.from_numpy(expression_vector(p.blendshapes, p.pose)) for p in scenes], n)
            source = source.float().to(self.device)
        streams = {}
        if swap:  # the source rows are the scene's person: its identity vector and spatial reference
            streams["source_streams"] = self._identity_streams(scene, n)
            streams["target_streams"] = {name: cond[name] for name in streams["source_streams"]}
        lora_rows = self._person_lora_rows(s, len(seeds))
        if lora_rows is not None:  # the person's LoRA scale per row (--person-rows, --person-scale)
            cond[ROW_SCALE_STREAM] = lora_rows[1]
            if s.person_rows == "target":  # (flowedit only: GenerationSettings refuses it with sdedit)
                for part, scale in zip(("source_streams", "target_streams"), lora_rows):
                    streams[part] = {**streams.get(part, {}), ROW_SCALE_STREAM: scale}
        region = edit_region(s.keep, self.device, size, box)
        who = people[0] if len(people) == 1 else people  # guidance reads each row's person (person_rows)
        ctx = GuidanceContext(s, self.model, self.nets, who, bs, target, source, region, self.device, **streams,
                              photo=photo)
        kinds = list(GUIDANCE.values())
        velocity = conditioned(self.model, cond)
        for kind in kinds:
            velocity = kind.velocity(ctx, velocity)
        keep = keep_mask(s.keep, size, box).to(self.device) if s.keep != "none" else None
        if s.method == "flowedit":
            expressions = torch.cat([source, target])
            rows = ctx.rows("source", "target")
            extra = {} if rows is None else {"streams": rows}
            pair = lambda x, t, v=velocity: v(x, t, expressions, **extra)  # noqa: E731 - rows: source, then target
            for kind in kinds:
                pair = kind.pair(ctx, velocity, pair)
            correct = chain(*(kind.correction(ctx) for kind in kinds))
            z = editing.flowedit(pair, photo, seeds, s.steps, s.strength, keep, correct, callback)
        else:
            from mien.sampling import flow_to_denoiser

            denoise = flow_to_denoiser(velocity)
            z = editing.sdedit(denoise, photo, seeds, s.steps, s.strength, s.sampler, keep, callback)
        z = self.model.denormalize(z)
        rgb = self.taef2.decode(z).clamp(0, 1)
        images = [(im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8) for im in rgb]
        with torch.inference_mode(False):  # an ordinary tensor for the caller (inference tensors cannot enter autograd)
            latents = z.cpu().clone()
        expr = exprs[0] if len(exprs) == 1 else np.stack(exprs)
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        return Generation(images, seeds, request.describe(), expr, s, self.model_hash, latents, self.person_hash, threads)
