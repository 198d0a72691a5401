"""Recogniser guidance: late in a FlowEdit, small steps up a face recogniser's similarity to the person.

Why: the built-in model draws a requested expression with features it learnt from other people
(deeper folds, darker eye bags, a generic mouth), and recognisers then miss the person — the in-the-wild
CFP dev people verified 0.70 with FlowEdit alone (model card). FlowEdit's state is a clean latent at
every step (:mod:`mien.sampling.flowedit`), so a recogniser can judge its decoded image as it stands;
after each late step the state moves a little along the gradient of the cosine between MobileFaceNet's
embedding of that image and of the identity photos. This is the forward step of universal guidance
(Bansal et al., "Universal Guidance for Diffusion Models", ICLR 2024), on the clean state instead of a
denoised estimate, with the identity loss face editors train with (the ArcFace-cosine loss of pSp,
Richardson et al., CVPR 2021).

Choices (figures on benchmarks/dev-wild.yaml in the model card, "Recogniser guidance"):

- Only late (flow time t <= ``until``, 0.3 by default: the last 7 of 25 steps): recognisers are not
  expression-blind, and in a trial at every step (a prototype of this code, not in the repository) the
  guidance pulled the expressions back toward the photo's; late, the expression's layout is already set
  and mostly detail moves. Scale 0.15 by default: on dev-wild it verified as well as 0.3 (CFP 0.95).
- MobileFaceNet, not face-api's descriptor: the identity condition and `mien evaluate`'s verification
  use face-api's, so guiding with another network keeps verification an independent check (the
  MobileFaceNet cosine `mien evaluate` reports is then not independent: the card says so).
- The step is the gradient, zeroed outside the face box (the kept background stays the photo's) and
  normalised to RMS 1 per image over the whole latent, times ``scale * (t - t_next)``, so the total
  move does not depend on the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mien.face import align


def arcface_grid(n: int = 1, size: int = 128, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 112, 112, 2) ``grid_sample`` grid that cuts MobileFaceNet's ArcFace 112 crop out of an aligned
    ``size`` px mien crop: the fixed similarity between the two five-point templates (every mien crop is
    aligned to TEMPLATE_128), so the crop is differentiable. Same pixels as ``cv2.warpAffine`` with that
    matrix (bilinear, black outside; tests/test_recogniser_guidance.py)."""
    m = align.similarity_transform(align.template(size), align.ARCFACE_112)  # crop px -> 112 px
    inv = torch.from_numpy(align.invert_affine(m)).float()  # 112 px -> crop px
    ys, xs = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ inv.T
    grid = (2 * pts + 1) / size - 1  # pixel centres -> grid_sample's [-1, 1] (align_corners=False)
    return grid[None].expand(n, -1, -1, -1).to(device)


def embed(embedder: torch.nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    """(B, 192) unit MobileFaceNet embeddings of aligned crops ``rgb`` (B, 3, S, S) in [0, 1]."""
    grid = arcface_grid(rgb.shape[0], rgb.shape[-1], rgb.device)
    arc = F.grid_sample(rgb * 255, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.normalize(embedder(arc), dim=1)


class RecogniserGuide:
    """The ``correct(z, t, t_next)`` hook of :func:`mien.sampling.flowedit.sample_flowedit`.

    ``decode`` maps the sampler's latents to RGB in [0, 1] (differentiably), ``target`` (B or 1, 192) are
    unit embeddings of the person, ``region`` (1, 1, H, W) weights the latent cells allowed to move (1 in
    the face box, 0 where the photo is kept).
    """

    def __init__(self, embedder: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor],
                 target: torch.Tensor, region: torch.Tensor, scale: float, until: float):  # fmt: skip
        self.embedder, self.decode, self.target, self.region = embedder, decode, target, region
        self.scale, self.until = float(scale), float(until)

    def similarity(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) cosine between each image's embedding and the person's."""
        return (embed(self.embedder, self.decode(z)) * self.target).sum(1)

    def __call__(self, z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        if self.scale <= 0 or t > self.until + 1e-9:
            return z
        # callers may run under inference_mode (its tensors cannot enter autograd): step out and clone
        with torch.inference_mode(False), torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            sim = (embed(self.embedder, self.decode(zz)) * self.target.clone()).sum(1)
            (grad,) = torch.autograd.grad(sim.sum(), zz)
        grad = grad * self.region
        rms = grad.pow(2).mean((1, 2, 3), keepdim=True).sqrt()  # over the whole latent, zeros outside included
        return z + self.scale * (t - t_next) * grad / (rms + 1e-12)


def no_grad_params(module: torch.nn.Module) -> torch.nn.Module:
    """Freeze a helper network (its gradients are never needed: only the input's)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


