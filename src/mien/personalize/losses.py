"""The personalisation losses: small callables ``loss(step) -> scalar``, weighted by
:class:`mien.personalize.config.LossWeights` and summed by the trainer.

All use the backbone's own objective, rectified-flow matching (``x_t = (1 - t) x0 + t eps``, target
``v = eps - x0``; :mod:`mien.builtin.loss`), with t drawn logit-normal (SD3's choice, as in training):

- :class:`FlowLoss`: on the person's photos, each conditioned on its own expression (blendshapes + pose)
  and the person's identity vector, with another of their photos as the spatial reference (as at
  generation), masked to the real pixels of each crop.
- :class:`LandmarkLoss`: the same prediction's error on the latent cells of the eyes, brows and mouth
  only, so those regions weigh more in the sum (FaceExpr's attention-focused fusion is about them).
- :class:`PriorLoss`: DreamBooth's prior preservation (Ruiz et al., CVPR 2023, eq. 2): the same loss on
  faces the base model drew before training (:mod:`mien.personalize.prior`), so the LoRA does not
  overwrite how the model makes other faces and expressions. It needs nothing but the installed model.
- :class:`ExpressionLoss`: FaceExpr's expression-crafting loss. From the noised photo, the model is asked
  for an expression unlike the photo's own; its clean estimate ``x0 = x_t - t v`` is decoded (TAEF2) and
  read by MediaPipe's blendshape net in PyTorch (:class:`mien.models.face_mesh.AlignedBlendshapes`,
  differentiable), and pulled toward the requested blendshapes. The photos only show the person's own
  expressions; this term keeps the LoRA from learning to ignore the expression stream.
- :class:`IdentityLoss`: PuLID's identity loss as the base model's training has it
  (:class:`mien.train.loss_consistency.ConsistencyFeedback`, reused): on the flow batch's own prediction
  (no extra model pass), the samples with little noise left (t <= ``t_max``) have their clean estimate
  ``x_t - t v`` decoded (TAEF2) and embedded by MobileFaceNet; the loss is 1 - cosine to the mean
  embedding of the person's decoded photos (and their mirror images). face-api, the identity condition and
  the benchmark's verification, stays an independent check.
- :class:`EditIdentityLoss`: the same identity measure on the model's prediction for a requested expression
  unlike the photo's own (as the expression-crafting loss asks), the rows that decide a FlowEdit's output;
  optionally gated per sample by :func:`expression_gate`, so that it judges identity only where the decoded
  prediction shows the requested expression.
- :class:`DirectionLoss`: keeps the LoRA's FlowEdit direction ``v(requested) - v(own expression)`` on the person's
  photo near the base model's, so that what the LoRA learns of the person changes how the photo looks, not how
  the model answers an expression request (docs/personalize.md, "The direction-keeping term").

Every random draw comes from the step's generator (``Step.g``, seeded by (seed, step)), so a resumed run
repeats the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mien.train.data import mirror_expression


@dataclass
class PersonTensors:
    """The person's photos as training tensors (on the training device)."""

    latents: torch.Tensor  # (N, C, H, W) raw latents
    latents_mirrored: torch.Tensor  # (N, C, H, W) raw latents of the mirrored crops
    mask: torch.Tensor  # (N, 1, H, W) share of real pixels per cell
    features: torch.Tensor  # (N, 1, H, W) 1 on cells of the eyes, brows and mouth
    expression: torch.Tensor  # (N, 55) each photo's own expression
    identity: torch.Tensor  # (D,) the person's identity condition (all photos; as at generation)

    def __len__(self) -> int:
        return self.latents.shape[0]


@dataclass
class PriorSet:
    """Faces the base model drew (:func:`mien.personalize.prior.sample_prior`): normalised latents and
    the expression each was drawn with (identity stream null: no one in particular)."""

    latents: torch.Tensor  # (M, C, H, W) normalised
    expression: torch.Tensor  # (M, 55)


def _randint(high: int, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(high, (n,), generator=g)


def _t_eps(x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit-normal t (SD3 sec. 3.1) and the noise, drawn on the CPU generator, moved to x0's device."""
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=g)).to(x0.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    return t, eps


def masked_mean(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    w = weight.expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)


@dataclass
class Step:
    """One training step's draws: the person's batch and the model's prediction on it (computed once,
    shared by :class:`FlowLoss` and :class:`LandmarkLoss`)."""

    model: torch.nn.Module
    person: PersonTensors
    prior: PriorSet | None
    g: torch.Generator
    batch: int
    flip_prob: float
    _flow: tuple | None = field(default=None, repr=False)
    _prediction: dict | None = field(default=None, repr=False)

    def person_batch(self, n: int) -> dict:
        """``n`` photos drawn with replacement, mirrored with chance ``flip_prob``, each with another photo
        of the person as the spatial reference (none when there is only one)."""
        p, g = self.person, self.g
        idx = _randint(len(p), n, g)
        flip = torch.rand(n, generator=g) < self.flip_prob
        dev = p.latents.device
        idx_d, f4 = idx.to(dev), flip.view(-1, 1, 1, 1).to(dev)
        x0 = torch.where(f4, p.latents_mirrored[idx_d], p.latents[idx_d])
        mask = torch.where(f4, p.mask[idx_d].flip(-1), p.mask[idx_d])
        feats = torch.where(f4, p.features[idx_d].flip(-1), p.features[idx_d])
        expr = torch.where(flip.view(-1, 1).to(dev), mirror_expression(p.expression[idx_d]), p.expression[idx_d])
        cond = {"identity": p.identity[None].expand(n, -1), "expression": expr}
        if getattr(self.model.backbone.config, "reference", False):
            if len(p) > 1:
                other = ((idx + 1 + _randint(len(p) - 1, n, g)) % len(p)).to(dev)
                cond["reference"] = torch.where(f4, p.latents_mirrored[other], p.latents[other])
            else:
                cond["reference"] = torch.zeros_like(x0)
        return {"x0": self.model.normalize(x0), "mask": mask, "features": feats, "cond": cond, "expression": expr}

    def prediction(self) -> dict:
        """The model's prediction on a person batch, computed once: {x0, x_t, t, v, eps, cond, mask, features}
        (normalised latents)."""
        if self._prediction is None:
            b = self.person_batch(self.batch)
            x0 = b["x0"]
            t, eps = _t_eps(x0, self.g)
            t4 = t.view(-1, 1, 1, 1)
            x_t = (1 - t4) * x0 + t4 * eps
            v = self.model.velocity(x_t, t, b["cond"])
            self._prediction = {**b, "x_t": x_t, "t": t, "v": v, "eps": eps}
        return self._prediction

    def flow_error(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(squared error per cell, mask, features) of the model on a person batch, computed once."""
        if self._flow is None:
            p = self.prediction()
            self._flow = ((p["v"].float() - (p["eps"] - p["x0"]).float()).square(), p["mask"], p["features"])
        return self._flow


class FlowLoss:
    def __call__(self, step: Step) -> torch.Tensor:
        err, mask, _ = step.flow_error()
        return masked_mean(err, mask)


class LandmarkLoss:
    def __call__(self, step: Step) -> torch.Tensor:
        err, mask, feats = step.flow_error()
        return masked_mean(err, mask * feats)


class PriorLoss:
    def __init__(self, batch: int):
        self.batch = batch

    def __call__(self, step: Step) -> torch.Tensor:
        prior = step.prior
        idx = _randint(len(prior.latents), self.batch, step.g).to(prior.latents.device)
        x0 = prior.latents[idx]
        t, eps = _t_eps(x0, step.g)
        t4 = t.view(-1, 1, 1, 1)
        null = {"identity": torch.ones(len(idx), dtype=torch.bool, device=x0.device)}
        v = step.model.velocity((1 - t4) * x0 + t4 * eps, t, {"expression": prior.expression[idx]}, null=null)
        return (v.float() - (eps - x0).float()).square().mean()


class ExpressionLoss:
    """Expression crafting (module docstring). ``measure``: normalised latents -> (B, 52) blendshapes,
    differentiable (:func:`mien.guidance.blendshape.latent_blendshapes`); ``targets`` (L, 52): the
    expressions it may ask for (the basic labels' targets); each row asks for one unlike the photo's own
    (not the target nearest to its blendshapes). ``t_range``: noise levels of the crafted step."""

    def __init__(self, measure: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, batch: int,
                 t_range: tuple[float, float] = (0.3, 0.7)):  # fmt: skip
        self.measure, self.targets, self.batch, self.t_range = measure, targets, batch, t_range

    def __call__(self, step: Step) -> torch.Tensor:
        p = requested_prediction(step, self.targets, self.batch, self.t_range)
        return (self.measure(p["x0_hat"]) - p["goal"])[:, 1:].pow(2).sum(1).mean()  # MediaPipe's _neutral: no movement


def requested_prediction(step: Step, targets: torch.Tensor, batch: int,
                         t_range: tuple[float, float]) -> dict[str, torch.Tensor | dict]:  # fmt: skip
    """The model asked, from ``batch`` of the person's photos noised to t in ``t_range``, for one of
    ``targets`` (L, 52) unlike each photo's own expression (not the target nearest its blendshapes):
    {"x_t", "t", "v", "cond"} (as :meth:`Step.prediction`), "x0_hat" (the clean estimate ``x_t - t v``,
    normalised latents) and "goal" (the blendshapes asked for). What FlowEdit's target rows predict when the
    person's photo is edited."""
    b = step.person_batch(batch)
    x0, g = b["x0"], step.g
    goal = unlike_own(b["expression"], targets, g)
    lo, hi = t_range
    t = (lo + (hi - lo) * torch.rand(batch, generator=g)).to(x0.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    t4 = t.view(-1, 1, 1, 1)
    x_t = (1 - t4) * x0 + t4 * eps
    cond = {**b["cond"], "expression": torch.cat([goal, b["expression"][:, 52:]], dim=1)}
    v = step.model.velocity(x_t, t, cond)
    return {"x_t": x_t, "t": t, "v": v, "cond": cond, "x0_hat": x_t - t4 * v, "goal": goal,
            "own": b["expression"][:, :52]}  # fmt: skip


def unlike_own(expression: torch.Tensor, targets: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B, 52): for each row of ``expression`` (B, 55), one of ``targets`` (L, 52) drawn at random among those
    other than the one nearest the row's blendshapes (its own expression)."""
    targets = targets.to(expression.device)
    own = torch.cdist(expression[:, :52], targets).argmin(1).cpu()
    pick = (own + 1 + _randint(len(targets) - 1, len(own), g)) % len(targets)
    return targets[pick.to(expression.device)]


class DirectionLoss:
    """Keeps the FlowEdit direction: ``||(v_lora(req) - v_lora(own)) - (v_base(req) - v_base(own))||²`` (mean per
    latent element) on the first ``batch`` rows of the flow batch (:meth:`Step.prediction`: the same photos, noise
    and t; its ``v`` is ``v_lora(own)``), each asked for one of ``targets`` (L, 52) unlike its own expression
    (:func:`unlike_own`, the only draw of its own). The base model's two velocities are one pass without gradient
    with the LoRA's update scaled to 0 on every row (:func:`mien.lora_rows.row_scale`).

    Why: FlowEdit moves the photo by v(requested) - v(own expression). What the LoRA learns of how the person
    looks changes both terms alike and cancels there, while its change to the direction (1.9-2.8 times the
    direction's own size at 150-300 steps on the tuning people) is what moves the output
    (docs/personalize.md, "Why the personalised model is no nearer"). This term penalises only that change, and
    leaves ``v_lora(own) - v_base(own)``, the person, free: with ``--person-rows target`` (the source rows take
    the base model) that difference is what survives in the edit. 0 where the LoRA is zero or at scale 0."""

    def __init__(self, targets: torch.Tensor, batch: int):
        self.targets, self.batch = targets, batch

    def __call__(self, step: Step) -> torch.Tensor:
        from mien.lora_rows import row_scale

        p = step.prediction()
        n = min(self.batch, p["x_t"].shape[0])
        x_t, t, own = p["x_t"][:n], p["t"][:n], {k: v[:n] for k, v in p["cond"].items()}
        goal = unlike_own(p["expression"][:n], self.targets, step.g)
        req = {**own, "expression": torch.cat([goal, own["expression"][:, 52:]], dim=1)}
        v_req = step.model.velocity(x_t, t, req)
        with torch.no_grad(), row_scale(torch.zeros(2 * n, device=x_t.device)):
            both = {k: torch.cat([own[k], req[k]]) for k in own}
            base = step.model.velocity(torch.cat([x_t, x_t]), torch.cat([t, t]), both).float()
        change = (v_req.float() - p["v"][:n].float()) - (base[n:] - base[:n])
        return change.square().mean()


def expression_gate(blendshapes: torch.Tensor, goal: torch.Tensor, own: torch.Tensor, width: float) -> torch.Tensor:
    """(B,) in (0, 1]: how far each prediction shows the expression asked for, ``exp(-d² / (width d0²))`` with d² the
    squared blendshape distance of the prediction (``blendshapes`` (B, 52)) to the request ``goal`` and d0² that of
    the photo's own expression ``own``, over the 51 movements (MediaPipe's ``_neutral`` is none). 1 where the request
    is met; exp(-1 / width) where the prediction kept the photo's expression. Relative to d0² because the labels lie
    at different distances from a photo (on tuning person cfp:451's neutral photo d0² is 0.69 for happy, 1.89 for
    disgusted). ``own`` is the photo's stored reading (MediaPipe on the crop); the differentiable net on its decoded
    latent reads within d² 0.03-0.05 of it on the tuning people. No gradient: see :class:`EditIdentityLoss`."""
    with torch.no_grad():
        d2 = (blendshapes.float() - goal.float())[:, 1:].square().sum(1)
        d0 = (own.float() - goal.float())[:, 1:].square().sum(1)
        return torch.exp(-d2 / (width * d0).clamp_min(1e-6))


class IdentityLoss:
    """Identity (module docstring). ``nets``: :class:`mien.train.loss_consistency.FeedbackNets` with
    ``decode`` (raw latents -> RGB in [0, 1]) and ``embed`` (RGB -> unit MobileFaceNet embeddings);
    ``target`` (D,): the unit mean embedding of the person's photos (:func:`identity_target`)."""

    def __init__(self, nets, target: torch.Tensor, t_max: float = 0.4):
        from mien.train.loss_consistency import ConsistencyFeedback

        self.feedback = ConsistencyFeedback(nets, identity_weight=1.0, t_max=t_max, samples=1 << 30)
        self.target = target

    def __call__(self, step: Step) -> torch.Tensor:
        return self.of(step, step.prediction())

    def of(self, step: Step, p: dict, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of the prediction ``p`` ({"x_t", "t", "v", "cond"}): the training objective's identity
        measure (:meth:`mien.train.loss_consistency.ConsistencyFeedback.losses`) on its samples with t <= t_max,
        each weighted by ``weight`` (B,) where given (the sum over samples divided by the weights' sum, at least 1)."""
        target = self.target.to(p["x_t"].device)[None].expand(p["x_t"].shape[0], -1)
        return self.feedback.losses(step.model, p["x_t"], p["t"], p["v"], p["cond"], {}, target, weight)["identity"]


class EditIdentityLoss(IdentityLoss):
    """Identity at a requested expression: :class:`IdentityLoss`'s measure on the model asked for a basic label
    unlike the photo's own (:func:`requested_prediction`, its own draws; every sample judged, t_range's upper end
    is the judge's t_max). :class:`IdentityLoss` judges the photo at its own expression, which FlowEdit's source
    rows subtract; this term judges the rows that decide an edit's output (docs/personalize.md). ``targets``
    (L, 52) the expressions it may ask for.

    Ungated, the term is met most cheaply by not making the edit: a prediction that keeps the photo's expression
    is nearest the photos' embedding, and on the tuning people it cost cfp:451 three to five of seven labels
    (docs/personalize.md, "Why the personalised model is no nearer"). With ``gate`` > 0 each sample's identity
    loss is weighted by :func:`expression_gate` of its decoded prediction (``measure``: normalised latents -> (B, 52)
    blendshapes, :func:`mien.guidance.blendshape.latent_blendshapes`), so a prediction that undoes the edit is
    hardly judged. The gate is detached: with its gradient, the cheapest way to lower ``gate * loss`` would be to
    lower the gate, i.e. to undo the edit again. The gate only weighs; the identity gradient of a row it lets through
    may still point back toward the photo's expression. ``hold`` > 0 adds expression crafting's pull toward the
    request (squared blendshape distance, as :class:`ExpressionLoss`) on the same rows and the same decoded
    prediction, so the two terms meet on one estimate."""

    def __init__(self, nets, target: torch.Tensor, targets: torch.Tensor, batch: int,
                 t_range: tuple[float, float] = (0.1, 0.5),
                 measure: Callable[[torch.Tensor], torch.Tensor] | None = None, gate: float = 0.0,
                 hold: float = 0.0):  # fmt: skip
        super().__init__(nets, target, t_max=t_range[1])
        if (gate > 0 or hold > 0) and measure is None:
            raise ValueError("the edit-identity gate and hold read the prediction's blendshapes: they need measure")
        self.targets, self.batch, self.t_range, self.measure = targets, batch, t_range, measure
        self.gate, self.hold = gate, hold

    def __call__(self, step: Step) -> torch.Tensor:
        p = requested_prediction(step, self.targets, self.batch, self.t_range)
        if self.gate <= 0 and self.hold <= 0:
            return self.of(step, p)
        with torch.set_grad_enabled(self.hold > 0 and torch.is_grad_enabled()):
            shapes = self.measure(p["x0_hat"])
        weight = expression_gate(shapes, p["goal"], p["own"], self.gate) if self.gate > 0 else None
        loss = self.of(step, p, weight)
        if self.hold > 0:
            loss = loss + self.hold * (shapes - p["goal"])[:, 1:].square().sum(1).mean()
        return loss


@torch.no_grad()
def identity_target(nets, person: PersonTensors) -> torch.Tensor:
    """(D,) the unit mean MobileFaceNet embedding of the person's decoded photos and their mirror images."""
    z = torch.cat([person.latents, person.latents_mirrored]).float()
    return torch.nn.functional.normalize(nets.embed(nets.decode(z)).float().mean(0), dim=0)
