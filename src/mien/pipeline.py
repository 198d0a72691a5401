"""`MienPipeline`: photos of a person + an expression request → that person with that expression.

The pipeline only composes (STYLE.md 9): face alignment (:mod:`mien.face`), the identity condition
(:class:`mien.models.identity.IdentityEncoder` on the aligned 128 px crop, exactly as the training
data was conditioned), the expression target (:mod:`mien.expression.targets`), the built-in model
(:mod:`mien.builtin`), per-stream guidance and a pure sampler (:mod:`mien.sampling`), by default started
from the identity photo with its background kept (:mod:`mien.builtin.edit`) and nudged late toward the
photos' MobileFaceNet identity (:mod:`mien.builtin.recogniser_guidance`), TAEF2 decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mien.errors import MienError, NoFaceError
from mien.settings import GENERATION_DEFAULTS

DEFAULT_MODEL = "default"
DEFAULTS = GENERATION_DEFAULTS


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


def align_photo(landmarker, rgb: np.ndarray) -> tuple[np.ndarray, object]:
    """(aligned 128 px crop, MediaPipe face) of the largest face in a photo."""
    crop, face, _ = align_photo_matrix(landmarker, rgb)
    return crop, face


def align_photo_matrix(landmarker, rgb: np.ndarray) -> tuple[np.ndarray, object, np.ndarray]:
    """(aligned 128 px crop, MediaPipe face, 2x3 photo -> crop matrix) of the largest face in a photo."""
    from mien.face import align

    faces = landmarker.detect(rgb)
    if not faces:
        raise NoFaceError("no face found; use a photo where the face is visible, frontal-ish and well lit")
    crop, m = align.align_face(rgb, align.five_points(faces[0].landmarks), 128)
    return crop, faces[0], m


def paste_into_photo(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str) -> np.ndarray:
    """A generated 128 px face put back into the photo it was edited from (inverse alignment warp,
    feathered blend). With ``keep="background"`` only the face box the edit may redraw is pasted (its edge
    feathered over ~8 crop pixels), so the photo away from the face stays exactly as it was rather than
    taking the crop's background, which went through TAEF2."""
    from mien.builtin.edit import keep_mask
    from mien.face import align

    mask = None  # keep="none": the whole crop
    if keep != "none":
        mask = (1 - F.interpolate(keep_mask(keep), size=image.shape[:2], mode="bilinear", align_corners=False))[0, 0].numpy()
    return align.paste_back(photo, image, matrix, mask=mask)


def reference_blendshapes(landmarker, rgb: np.ndarray) -> np.ndarray:
    """The expression of a reference photo (``--like``): its blendshapes; its identity is not used."""
    return align_photo(landmarker, rgb)[1].blendshapes


def align_photos(landmarker, photos: list[np.ndarray], names: list[str] | None = None) -> AlignedPhotos:
    """Align every photo that has a face; NoFaceError when none has. Needs only the landmarker, so the
    CLI finds a faceless photo before it spends seconds loading the models."""
    names = names or [f"photo {i + 1}" for i in range(len(photos))]
    out = AlignedPhotos([], [])
    for i, (name, rgb) in enumerate(zip(names, photos)):
        try:
            crop, face, m = align_photo_matrix(landmarker, rgb)
        except NoFaceError as e:
            out.skipped.append(f"{name}: {e}")
            continue
        out.crops.append(crop)
        out.faces.append(face)
        out.matrices.append(m)
        out.sources.append(i)
    if not out.crops:
        raise NoFaceError("no usable face in any identity photo (" + "; ".join(out.skipped) + ")")
    return out


@dataclass
class Generation:
    images: list[np.ndarray]  # uint8 128x128x3
    seeds: list[int]
    request: str
    expression: np.ndarray  # (55,) the conditioning vector used
    settings: dict
    latents: torch.Tensor | None = None  # (n, 32, 16, 16) raw TAEF2 latents of the images


class MienPipeline:
    def __init__(self, model, taef2, identity, landmarker, model_dir: Path, device: torch.device):
        self.model, self.taef2, self.identity, self.landmarker = model, taef2, identity, landmarker
        self.model_dir, self.device = Path(model_dir), device
        self.blendshape_net = None  # AlignedBlendshapes, loaded when blendshape guidance is first asked for
        self.model_hash = model.sha256[:12]
        from mien.expression.aus import AUCalibration
        from mien.expression.basic import Prototypes

        self.prototypes, self.calibration = Prototypes.load(), AUCalibration.load()

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_MODEL, device: str = "cpu", landmarker=None) -> "MienPipeline":
        """Load the built-in model (``"default"``: the one shipped inside the package) and its helpers;
        ``landmarker``: a FaceLandmarker already opened (the pipeline then owns it and closes it)."""
        from mien.builtin.model import MienModel
        from mien.models.identity import IdentityEncoder
        from mien.models.taef2 import TAEF2

        model_dir = default_model_dir() if str(path) == DEFAULT_MODEL else Path(path)
        dev = torch.device(device)
        model = MienModel.from_pretrained(model_dir).to(dev).eval()
        taef2 = TAEF2.from_weights(decoder_path=model.decoder_path).to(dev).eval()  # the model's own decoder, if any
        identity = IdentityEncoder.from_weights().to(dev)  # face-api (the condition) and MobileFaceNet (guidance)
        if landmarker is None:  # imported here: a caller with its own (or no MediaPipe, e.g. on a GPU host) passes one
            from mien.face.landmarker import FaceLandmarker

            landmarker = FaceLandmarker(num_faces=2)
        return cls(model, taef2, identity, landmarker, model_dir, dev)

    def close(self) -> None:
        self.landmarker.close()

    # -- inputs -----------------------------------------------------------------------------------
    def align(self, rgb: np.ndarray) -> tuple[np.ndarray, object]:
        """(aligned 128 px crop, MediaPipe face) of the largest face in a photo."""
        return align_photo(self.landmarker, rgb)

    def prepare_identity(self, photos: list[np.ndarray], names: list[str] | None = None) -> IdentityInput:
        """Align each photo and combine their identity vectors (:meth:`identity_input`)."""
        return self.identity_input(align_photos(self.landmarker, photos, names))

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

    def reference_blendshapes(self, rgb: np.ndarray) -> np.ndarray:
        """The expression of a reference photo (``--like``): its blendshapes; its identity is not used."""
        return reference_blendshapes(self.landmarker, rgb)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, identity: IdentityInput, request, n: int = 1, seed: int = 0, steps: int = DEFAULTS["steps"],
                 sampler: str = DEFAULTS["sampler"], guidance_identity: float = DEFAULTS["guidance_identity"],
                 guidance_expression: float = DEFAULTS["guidance_expression"],
                 strength: float = DEFAULTS["strength"], keep: str = DEFAULTS["keep"],
                 method: str = DEFAULTS["method"], guidance_until: float = DEFAULTS["guidance_until"],
                 recogniser_guidance: float | None = None,
                 recogniser_guidance_until: float = DEFAULTS["recogniser_guidance_until"],
                 guidance_contrast: float | None = DEFAULTS["guidance_contrast"],
                 blendshape_guidance: float | None = DEFAULTS["blendshape_guidance"],
                 blendshape_guidance_until: float = DEFAULTS["blendshape_guidance_until"]) -> Generation:  # fmt: skip
        """Images of ``identity`` with the expression of ``request``.

        ``method="flowedit"`` moves the first identity photo by the difference between the model's
        predictions for the requested expression and for the photo's own, from flow time ``strength``;
        ``method="sdedit"`` starts ``sampler`` from the photo noised to ``strength`` (``strength=1,
        keep="none"``: from pure noise). ``keep="background"`` keeps the photo outside the face box,
        ``guidance_until`` > 0 guides only while t is above it (:mod:`mien.builtin.edit`).
        ``guidance_contrast`` (flowedit only) pushes the target away from the photo's own expression
        (:func:`mien.builtin.edit.flowedit_velocity`); None takes the request's labels' scale
        (:data:`mien.expression.basic.LABEL_CONTRAST`), 1 is off. ``recogniser_guidance`` > 0 (flowedit
        only) nudges the edit toward the photos' MobileFaceNet embedding at flow times t <=
        ``recogniser_guidance_until`` (:mod:`mien.builtin.recogniser_guidance`); None takes the default,
        which is larger with contrast guidance (:func:`mien.settings.recogniser_guidance_for`).
        ``blendshape_guidance`` > 0 (flowedit only) nudges the edit toward the request's blendshapes as
        MediaPipe reads the decoded face, at t <= ``blendshape_guidance_until``
        (:mod:`mien.builtin.blendshape_guidance`); None takes the request's labels' scale
        (:data:`mien.expression.basic.LABEL_BLENDSHAPE`: fearful 1), 0 is off.
        """
        from mien.expression.targets import blendshape_target, expression_vector
        from mien.sampling import SAMPLERS
        from mien.settings import blendshape_guidance_for, check_edit, contrast_for, recogniser_guidance_for

        if sampler not in SAMPLERS:
            raise MienError(f"unknown sampler '{sampler}'; choose one of {', '.join(sorted(SAMPLERS))}")
        if steps < 1 or n < 1:
            raise MienError("--steps and --n must be at least 1")
        check_edit(strength, keep, method, guidance_until, recogniser_guidance, recogniser_guidance_until,
                   guidance_contrast, blendshape_guidance, blendshape_guidance_until)
        contrast = contrast_for(method, guidance_contrast, request.mix)
        recogniser_guidance = recogniser_guidance_for(method, recogniser_guidance, contrast)  # sdedit: 0, or an error
        blendshape_guidance = blendshape_guidance_for(method, blendshape_guidance, request.mix)
        bs = blendshape_target(request, self.prototypes, self.calibration)
        expr = expression_vector(bs, identity.pose)
        cond = {"identity": identity.vector[None].expand(n, -1).to(self.device),
                "expression": torch.from_numpy(expr)[None].expand(n, -1).float().to(self.device)}
        if self.model.config.reference:
            cond["reference"] = identity.latent[None].expand(n, -1, -1, -1).to(self.device)
        seeds = [seed + i for i in range(n)]
        scales = (guidance_identity, guidance_expression)
        interval = (guidance_until, 1.0) if guidance_until > 0 else None  # guidance only while t > guidance_until
        photo = self.model.normalize(identity.latent[None].to(self.device)).expand(n, -1, -1, -1)
        if method == "flowedit":
            src = expression_vector(identity.blendshapes, identity.pose)  # the photo's own expression
            from mien.builtin.recogniser_guidance import chain

            guide = chain(self._blendshape_guide(bs, keep, blendshape_guidance, blendshape_guidance_until),
                          self._recogniser_guide(identity, keep, recogniser_guidance, recogniser_guidance_until))
            z = self._flowedit(src, cond, photo, seeds, steps, strength, keep, scales, interval, guide, contrast)
        else:
            z = self._sdedit(cond, photo, seeds, steps, sampler, strength, keep, scales, interval)
        z = self.model.denormalize(z)
        rgb = self.taef2.decode(z).clamp(0, 1)
        images = [(im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8) for im in rgb]
        settings = {"steps": steps, "sampler": sampler, "guidance_identity": guidance_identity,
                    "guidance_expression": guidance_expression, "strength": strength, "keep": keep, "method": method,
                    "guidance_until": guidance_until, "recogniser_guidance": recogniser_guidance,
                    "recogniser_guidance_until": recogniser_guidance_until, "guidance_contrast": contrast,
                    "blendshape_guidance": blendshape_guidance, "blendshape_guidance_until": blendshape_guidance_until,
                    "model_hash": self.model_hash}
        return Generation(images, seeds, request.describe(), expr, settings, z.cpu())

    def _sdedit(self, cond: dict, photo: torch.Tensor, seeds: list[int], steps: int, sampler: str, strength: float,
                keep: str, scales: tuple, interval: tuple | None) -> torch.Tensor:  # fmt: skip
        """SDEdit from the photo noised to flow time ``strength`` (pure noise at 1), any sampler (:mod:`mien.builtin.edit`)."""
        from mien.builtin import edit
        from mien.builtin.guidance import guided_denoiser
        from mien.sampling import SAMPLERS, flow_sigmas

        noise = torch.stack([torch.randn(32, 16, 16, generator=torch.Generator().manual_seed(s)) for s in seeds])
        denoise = guided_denoiser(self.model, cond, scales=scales, interval=interval)
        if keep != "none":
            denoise = edit.kept_region_denoiser(denoise, photo, edit.keep_mask(keep).to(self.device))
        sigmas = flow_sigmas(steps, start=strength).to(self.device)
        noise = noise.to(self.device) * sigmas[0]
        return SAMPLERS[sampler](denoise, photo + noise if strength < 1 else noise, sigmas)

    def _flowedit(self, source: np.ndarray, cond: dict, photo: torch.Tensor, seeds: list[int], steps: int,
                  strength: float, keep: str, scales: tuple, interval: tuple | None, guide=None,
                  contrast: float = 1.0) -> torch.Tensor:  # fmt: skip
        """FlowEdit from the photo's own expression ``source`` (55,) to the requested one (:mod:`mien.sampling.flowedit`)."""
        from mien.builtin import edit
        from mien.sampling import flow_times, sample_flowedit

        src = torch.from_numpy(source)[None].expand(photo.shape[0], -1).float().to(self.device)
        velocity = edit.flowedit_velocity(self.model, cond, src, scales, interval, contrast=contrast)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        drawn = 0

        def noise(k: int) -> torch.Tensor:  # each seed's own stream, so image i is the same at any n
            nonlocal drawn
            if k != drawn:
                raise RuntimeError(f"noise draws must come in order: asked for {k}, next is {drawn}")
            drawn += 1
            return torch.stack([torch.randn(photo.shape[1:], generator=g) for g in gens]).to(self.device)

        mask = edit.keep_mask(keep).to(self.device) if keep != "none" else None
        return sample_flowedit(velocity, photo, flow_times(steps, strength), noise, keep=mask, correct=guide)

    def _recogniser_guide(self, identity: IdentityInput, keep: str, scale: float, until: float):
        """The recogniser-guidance hook for FlowEdit (:mod:`mien.builtin.recogniser_guidance`), or None when off."""
        if scale <= 0:
            return None
        if identity.embedding is None:
            raise MienError("recogniser guidance needs MobileFaceNet in the pipeline's IdentityEncoder (as "
                            "MienPipeline.from_pretrained builds it), or pass recogniser_guidance=0")
        from mien.builtin.recogniser_guidance import RecogniserGuide, latent_embedder

        embed = latent_embedder(self.model, self.taef2, self.identity)
        return RecogniserGuide.for_edit(embed, identity.embedding[None].to(self.device), keep, scale, until)

    def _blendshape_guide(self, target: np.ndarray, keep: str, scale: float, until: float):
        """The blendshape-guidance hook for FlowEdit (:mod:`mien.builtin.blendshape_guidance`), or None when off.
        Its nets (MediaPipe's mesh and blendshapes in PyTorch) load on first use."""
        if scale <= 0:
            return None
        from mien.builtin.blendshape_guidance import BlendshapeGuide, latent_blendshapes

        if self.blendshape_net is None:
            from mien.models.face_mesh import AlignedBlendshapes

            with torch.inference_mode(False):  # weights made under a caller's inference_mode could not enter autograd
                self.blendshape_net = AlignedBlendshapes.from_weights().to(self.device)
        measure = latent_blendshapes(self.model, self.taef2, self.blendshape_net)
        goal = torch.from_numpy(np.asarray(target, np.float32))[None].to(self.device)
        return BlendshapeGuide.for_edit(measure, goal, keep, scale, until)
