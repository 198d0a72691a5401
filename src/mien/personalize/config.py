"""The typed settings of a personalisation run: LoRA shape, optimiser, and each loss's weight.

Saved in the person folder's card and in its checkpoint, so a resumed run is refused when they differ.
Defaults are chosen on the tuning people of the dev benchmark (docs/personalize.md, "Choosing the
defaults"); the figures reported there come from the other people.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mien.builtin.config import LORA_TARGET_SETS, LORA_TARGETS  # torch-free module
from mien.errors import MienError


def lora_targets(name: str) -> list[str]:
    """The module names of a named target set (:data:`mien.builtin.config.LORA_TARGET_SETS`); a one-line error
    naming the sets otherwise."""
    if name not in LORA_TARGET_SETS:
        raise MienError(f"--lora-targets {name!r} is not a target set; choose one of {', '.join(LORA_TARGET_SETS)}")
    return list(LORA_TARGET_SETS[name])


@dataclass
class LossWeights:
    """Weight of each loss term (:mod:`mien.personalize.losses`); 0 turns a term off (and skips its cost)."""

    flow: float = 1.0  # flow matching on the person's photos, each conditioned on its own expression
    prior: float = 1.0  # the same loss on faces sampled from the base model (DreamBooth's prior preservation)
    landmarks: float = 1.0  # flow matching restricted to the cells of the eyes, brows and mouth
    expression: float = 0.02  # expression crafting: the decoded prediction's blendshapes vs another expression
    identity: float = 0.0  # 1 - MobileFaceNet cosine of the decoded small-t prediction to the photos' mean embedding
    edit_identity: float = 0.0  # the same at a requested expression unlike the photo's (EditIdentityLoss)
    # keeps the LoRA's FlowEdit direction v(requested) - v(own) near the base model's (DirectionLoss): the LoRA's
    # harm is its change to that direction (docs/personalize.md, "Why the personalised model is no nearer")
    direction: float = 0.0

    @property
    def judge_identity(self) -> bool:
        """Whether a term needs the identity nets (TAEF2's decoding, MobileFaceNet)."""
        return self.identity > 0 or self.edit_identity > 0


@dataclass
class PersonalizeConfig:
    steps: int = 150
    rank: int = 8  # LoRA rank r (Hu et al. 2021)
    alpha: float = 8.0  # LoRA scale is alpha / r
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # module names the LoRA wraps
    lr: float = 1e-3
    batch: int = 4  # the person's photos per step (drawn with replacement: K may be 1)
    prior_batch: int = 4  # prior faces per step
    prior_samples: int = 16  # faces sampled from the base model before training
    prior_steps: int = 16  # Euler steps of each prior sample
    expression_batch: int = 2  # rows of the expression-crafting loss per step
    expression_every: int = 1  # the expression-crafting loss on every k-th step (it decodes: the dearest term)
    identity_t_max: float = 0.4  # the identity loss judges the flow batch's samples with t at most this
    edit_identity_batch: int = 2  # rows of the edit-identity loss per step
    direction_batch: int = 2  # rows of the flow batch the direction-keeping loss asks for another expression
    # > 0: the edit-identity loss judges each row by how far its decoded prediction shows the request,
    # exp(-d² / (gate d0²)) (losses.expression_gate); 0: every row alike
    edit_identity_gate: float = 0.0
    # > 0: the edit-identity loss adds this weight times expression crafting's blendshape distance on its own rows
    edit_identity_hold: float = 0.0
    flip_prob: float = 0.5  # mirrored photo (and mirrored condition) with this chance
    landmark_dilate: int = 1  # latent cells added around the landmark cells
    checkpoint_every: int = 25
    seed: int = 0
    losses: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self):
        if isinstance(self.losses, dict):
            self.losses = LossWeights(**self.losses)
        for name in ("steps", "rank", "batch", "prior_batch", "expression_batch", "expression_every", "edit_identity_batch",
                     "direction_batch", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                flag = {"steps": "--steps", "rank": "--rank"}.get(name, name)
                raise MienError(f"{flag} {v} must be a whole number of at least 1")
        for name in ("edit_identity_gate", "edit_identity_hold"):
            if getattr(self, name) < 0:
                raise MienError(f"{name} {getattr(self, name)} must be 0 (off) or more")
        if self.rank > 64:
            raise MienError(f"--rank {self.rank} is larger than a personal adapter needs; choose 1 to 64")
        if not self.targets:
            raise MienError("the LoRA needs at least one target module")

    @property
    def reads_blendshapes(self) -> bool:
        """Whether a term reads the prediction's blendshapes (expression crafting, the edit-identity gate)."""
        return self.losses.expression > 0 or (
            self.losses.edit_identity > 0 and (self.edit_identity_gate > 0 or self.edit_identity_hold > 0))
