"""Consistency feedback in training: expression and identity losses on the denoiser's one-step prediction.

At a training step the flow loss (:class:`mien.builtin.loss.FlowMatchingLoss`) sees
x_t = (1 - t) x0 + t eps and the predicted velocity v = eps - x0; so x0_hat = x_t - t v is the model's
one-step prediction of the clean latent. Where little noise is left (t <= ``t_max``) x0_hat is a
recognisable face; it is decoded (TAEF2, the model's own decoder) and judged by two frozen nets whose
gradients pass through the decoder into v, i.e. into the denoiser:

- expression: MediaPipe's 52 blendshapes of the prediction
  (:class:`mien.models.face_mesh.AlignedBlendshapes`, the mesh and blendshape nets in PyTorch) against
  the conditioning blendshapes, squared error summed over the 51 movements (``_neutral`` is not one), as
  blendshape guidance scores a face (:mod:`mien.guidance.blendshape`). This is FaceExpr's
  expression-crafting loss and ControlNet++'s cycle consistency (Li et al., ECCV 2024, sec. 3.2: a
  reward model on the single-step denoised image, applied only at small noise levels).
- identity: 1 - cosine between MobileFaceNet's embedding of the prediction and that of the identity
  condition's photo (another photo of the person where the data has one): PuLID's identity loss (Guo et
  al., NeurIPS 2024). MobileFaceNet, not face-api: face-api's descriptor is the identity *condition* and
  ``mien evaluate``'s verification, which then stays an independent check.

Where the one-step prediction starts (``start``):
- "photo": from the training photo itself noised to t. At t <= ``t_max`` the input already shows most of
  the photo, so the expression loss asks the model to keep the expression its input holds: it sharpens
  reconstruction, not a change of expression (the paired run of 2026-12-06, docs/training.md).
- "other": from another photo of the same person (the one whose identity the sample is conditioned on)
  noised to the same t with the same noise, conditioned on the training photo's expression. The
  prediction must then move the person's face from that photo's expression to the requested one in one
  step, which is the edit FlowEdit makes at inference, where the photo edited is the identity photo; the
  ideal conditional flow at that input points there too, so the loss agrees with the flow objective.
  The identity loss then judges against the training photo's own embedding (the start photo's would reward
  copying the start). This costs one more model pass over the ``samples`` judged; samples whose person has
  no other photo get no feedback.

Choices:
- A sample whose stream was nulled by guidance dropout gets no feedback for that stream: its prediction
  is the model's unconditional one, which must not learn the condition (the caller draws the dropout
  with ``dropout_null`` and passes it in, :meth:`mien.builtin.model.AdaptedModel.velocity`).
- Cost bound without a host sync: the ``samples`` lowest-t samples of the batch (``torch.topk``: fixed
  shapes) are decoded; those above ``t_max`` get weight 0. Each loss is the mean over the samples that
  count.
- The nets run in float32 outside autocast: MediaPipe's landmark regression is not made for bf16.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mien.builtin.config import FEEDBACK_STARTS

LOSS_NAMES = ("expression", "identity")
STARTS = FEEDBACK_STARTS  # where the one-step prediction starts (module docstring)


@dataclass
class FeedbackNets:
    """The frozen, differentiable judges: ``decode`` raw TAEF2 latents -> RGB in [0, 1] (B, 3, 128, 128);
    ``blendshapes`` RGB [0, 1] -> (B, 52); ``embed`` RGB [0, 1] -> (B, D) unit embeddings. A net may be
    None when its loss is off."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    blendshapes: Callable[[torch.Tensor], torch.Tensor] | None = None
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None


def load_feedback_nets(device, decoder_path: str | Path | None = None, expression: bool = True,
                       identity: bool = True) -> FeedbackNets:  # fmt: skip
    """The real nets from the weights folder (``mien.weights.locate``): TAEF2 with ``decoder_path`` (the
    model's fine-tuned decoder; None: the published one), MediaPipe's mesh + blendshapes, MobileFaceNet."""
    from mien.models.taef2 import TAEF2

    taef2 = TAEF2.from_weights(decoder_path=decoder_path).to(device).eval().requires_grad_(False)
    nets = FeedbackNets(decode=taef2.decode)  # clamped to [0, 1]
    if expression:
        from mien.models.face_mesh import AlignedBlendshapes

        nets.blendshapes = AlignedBlendshapes.from_weights().to(device).requires_grad_(False)
    if identity:
        nets.embed = mobilefacenet_embedder(device)
    return nets


def mobilefacenet_embedder(device) -> Callable[[torch.Tensor], torch.Tensor]:
    """RGB [0, 1] aligned crops -> (B, 192) unit MobileFaceNet embeddings (the fixed ArcFace crop of
    :class:`mien.models.identity.IdentityEncoder`, without face-api's net)."""
    from mien.models.identity import IdentityEncoder
    from mien.models.mobilefacenet import MobileFaceNet

    enc = IdentityEncoder(None, MobileFaceNet.from_weights()).to(device).eval().requires_grad_(False)
    return lambda rgb: enc.mobilefacenet_unit(rgb * 255)


class ConsistencyFeedback:
    """The weighted consistency losses of one training step (module docstring)."""

    def __init__(self, nets: FeedbackNets, expression_weight: float = 0.0, identity_weight: float = 0.0,
                 t_max: float = 0.4, samples: int = 64, start: str = "photo"):  # fmt: skip
        if expression_weight < 0 or identity_weight < 0:
            raise ValueError("consistency loss weights must be >= 0")
        if start not in STARTS:
            raise ValueError(f"feedback start {start!r}: choose one of {', '.join(STARTS)}")
        self.start = start
        if (expression_weight > 0 and nets.blendshapes is None) or (identity_weight > 0 and nets.embed is None):
            raise ValueError("a consistency loss with a weight > 0 needs its net (FeedbackNets)")
        self.nets, self.t_max, self.samples = nets, float(t_max), int(samples)
        self.weights = {"expression": float(expression_weight), "identity": float(identity_weight)}

    @property
    def active(self) -> bool:
        return any(w > 0 for w in self.weights.values())

    def losses(self, net, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, cond: dict, null: dict,
               identity_target: torch.Tensor | None = None, weight: torch.Tensor | None = None,
               ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Unweighted losses {name: scalar} of the losses with weight > 0.

        ``net`` has ``denormalize`` (x_t and v are in its normalised latent space); ``cond["expression"]``
        (B, >= 52) holds the conditioning blendshapes first; ``null`` {stream: (B,) bool} the dropout the
        prediction was made with; ``identity_target`` (B, D) unit embeddings of each sample's identity photo;
        ``weight`` (B,) an extra per-sample weight (0: no feedback for that sample).
        """
        k = min(self.samples, x_t.shape[0])
        tk, idx = torch.topk(t, k, largest=False)
        use = (tk <= self.t_max).float()
        if weight is not None:
            use = use * weight[idx].float()
        x0_hat = x_t[idx].float() - tk.float().view(-1, 1, 1, 1) * v[idx].float()
        out = {}
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            rgb = self.nets.decode(net.denormalize(x0_hat))
            if self.weights["expression"] > 0:
                w = use * _kept(null, "expression", idx)
                err = (self.nets.blendshapes(rgb) - cond["expression"][idx, :52].float())[:, 1:].square().sum(1)
                out["expression"] = (err * w).sum() / w.sum().clamp_min(1.0)
            if self.weights["identity"] > 0:
                if identity_target is None:
                    raise ValueError("the identity loss needs identity_target (embeddings of the identity photos)")
                w = use * _kept(null, "identity", idx)
                cos = (self.nets.embed(rgb) * identity_target[idx].float()).sum(1)
                out["identity"] = ((1 - cos) * w).sum() / w.sum().clamp_min(1.0)
        return out

    def weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in losses.items())


def _kept(null: dict | None, stream: str, idx: torch.Tensor) -> torch.Tensor:
    """1.0 where ``stream`` was not nulled, for the samples ``idx``."""
    drop = (null or {}).get(stream)
    if drop is None:
        return torch.ones(idx.shape[0], device=idx.device)
    return (~drop.to(idx.device, torch.bool)[idx]).float()


def feedback_step(loss_fn, model, net, feedback: ConsistencyFeedback, batch: dict, null: dict | None):
    """(total loss, {flow, expression, identity}) of one training step with the consistency losses on.

    The stream dropout is drawn here (``net.dropout_null``) and the model is called with ``dropout=False``,
    so the losses know which samples lost which condition; the flow loss is otherwise today's."""
    x0 = net.normalize(batch["latents"])
    null = net.dropout_null(null, x0.shape[0])
    flow, t, x_t, v = loss_fn.parts(model, x0, batch["cond"], batch["mask"], null, dropout=False)
    if feedback.start == "other":
        losses = _from_other_photo(model, net, feedback, batch, null, x0, t, x_t)
    else:
        losses = feedback.losses(net, x_t, t, v, batch["cond"], null, batch.get("identity_target"))
    return flow + feedback.weighted(losses), {"flow": flow.detach(), **{k: l.detach() for k, l in losses.items()}}


def _from_other_photo(model, net, feedback: ConsistencyFeedback, batch: dict, null: dict, x0: torch.Tensor,
                      t: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
    """The losses with the one-step prediction started from another photo of the person (``start`` "other"):
    for the ``samples`` lowest-t samples, that photo's latent noised with the sample's own noise,
    ``x_t + (1 - t) (other - x0)`` = ``(1 - t) other + t eps``, and one more model pass on it with the
    sample's conditions (its expression, its identity and reference). The identity loss compares with the
    training photo's own embedding: the person as the requested expression shows them."""
    if "other_latents" not in batch:
        raise ValueError('feedback start "other" needs batches with other_latents (FaceLatentDataset(other_photo=True))')
    k = min(feedback.samples, x0.shape[0])
    tk, idx = torch.topk(t, k, largest=False)
    x_other = x_t[idx] + (1 - tk).view(-1, 1, 1, 1) * (net.normalize(batch["other_latents"][idx]) - x0[idx])
    cond = {name: c[idx] for name, c in batch["cond"].items()}
    null_k = {name: n[idx] for name, n in null.items() if n is not None}
    v_other = model(x_other, tk, cond, null=null_k, dropout=False)
    # identity against the training photo's own embedding: the start photo's would reward copying the start,
    # expression and all
    target = batch.get("own_identity_target")
    return feedback.losses(net, x_other, tk, v_other, cond, null_k, None if target is None else target[idx],
                           weight=batch["other_ok"][idx])  # fmt: skip
