"""Training tensors of the built-in model and the Dataset that serves them.

``TrainTensors`` is the in-memory form of a training pack: raw TAEF2 latents, the real-pixel mask
per latent cell, each photo's identity embedding and expression vector, and for every sample the
indices of *other* photos of the same person (``ref_candidates``). Each epoch the identity
condition of sample i is the embedding of one of its candidates, drawn afresh, so expression and pose
have to come from the expression stream (DESIGN.md, "Identity conditioning without copy-paste");
a sample whose person has no other photo uses its own embedding.

Mirroring. A horizontal flip is only a valid augmentation if the condition is mirrored too: left and
right blendshapes swap and yaw and roll change sign. It also needs the latent of the *mirrored image*:
TAEF2 latents are not flip-equivariant (measured on 16 dev faces: decode(flip(z)) reaches 18.6 dB
PSNR against the flipped photo where decode(z) reaches 29.5 dB against the photo, and
flip(encode(flip(x))) differs from encode(x) by 82 % relative L2). So flipping requires
``latents_mirrored`` (encoded from mirrored photos) in the pack; flipping latents here is refused.

Spatial reference (``reference=True``, for models with ``config.reference``): the batch also carries
the raw latent of the drawn reference photo (mirrored with the sample, so the two stay aligned), and
zeros ("no reference") for people with a single photo: their own latent would teach the model to
copy its input, expression included. Self-reference (``self_reference`` = p > 0, for models whose
``reference_pool`` shows them only a coarse copy of the reference): each sample's reference is, with
chance p, its *own* latent — aligned with the target, so the model learns to take colour, lighting
and layout from it, while the pooling leaves the expression to the expression stream — and its
identity vector is then its own too (as at inference, where the edited photo is the identity photo).
People with a single photo then have a reference too.

Which identity photos the consistency start "other" judges (``other_max_pose``, ``other_max_distance``):
the loss asks the model to turn that photo into the training photo in one step, so a pair that differs in
pose or in age and light as much as in expression teaches it to change the whole face. A pair beyond
either limit gets ``other_ok`` False (no feedback; its flow loss is unchanged). The pose difference is
the largest of |yaw|, |pitch|, |roll| differences in degrees; mirroring negates yaw and roll of both
photos alike, so it is read from the unmirrored vectors. The distance is Euclidean between the two
photos' identity vectors (L2-normalised face-api descriptors, mien.data.training_view), as face-api
compares faces. docs/training.md, "Which pairs the other start judges", gives the limits' pass rates.

Per-source sampling weights (``TrainConfig.source_weights``, :class:`SourceDraw`): each photo of a source of
weight w is drawn w times per epoch. The posed sets are where the consistency losses teach editing: the
Taiwanese photos are one person posing several expressions in one sitting (same light, pose within a few
degrees), so a pair of them differs mainly in expression, the change an edit asks for; the other sources'
pairs also differ in pose, light and age (docs/training.md, "Which pairs the other start judges").
Weighting a source up shows the model more of those pairs without leaving the rest out.

Randomness is a pure function of (seed, epoch): resuming at any step rebuilds the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM, check_pair_limits
from mien.data.faces128 import key_sources, source_prefix
from mien.errors import MienError
from mien.expression.targets import POSE_SCALE
from mien.models.blendshapes import BLENDSHAPE_NAMES

POSE_NAMES = ("yaw", "pitch", "roll")  # expression[52:55], degrees / 90 (config.EXPRESSION_DIM)
EXPRESSION_NAMES = (*BLENDSHAPE_NAMES, *POSE_NAMES)


def _mirror_name(name: str) -> str:
    for a, b in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return name


# mirror image: ...Left <-> ...Right by name; yaw and roll change sign, pitch does not
MIRROR_PERMUTATION = torch.tensor([EXPRESSION_NAMES.index(_mirror_name(n)) for n in EXPRESSION_NAMES])
MIRROR_SIGN = torch.tensor([-1.0 if n in ("yaw", "roll") else 1.0 for n in EXPRESSION_NAMES])


def mirror_expression(expression: torch.Tensor) -> torch.Tensor:
    """(..., 55) expression vectors of the mirrored faces."""
    perm, sign = MIRROR_PERMUTATION.to(expression.device), MIRROR_SIGN.to(expression.device, expression.dtype)
    return expression[..., perm] * sign


@dataclass
class TrainTensors:
    latents: torch.Tensor  # (N, 32, 16, 16) float16, raw TAEF2 latents (normalised in the loop)
    mask: torch.Tensor  # (N, 1, 16, 16) float16, share of real pixels per latent cell
    identity: torch.Tensor  # (N, IDENTITY_DIM) float16, this photo's identity vector
    expression: torch.Tensor  # (N, 55) float16, blendshapes + pose of this photo
    ref_candidates: list[np.ndarray]  # per sample: indices of other photos of the same person
    latents_mirrored: torch.Tensor | None = None  # (N, 32, 16, 16): latents of the mirrored photos
    # (N, D) unit recogniser embeddings (MobileFaceNet) of each photo and of its mirror image: the identity
    # loss's targets (mien.train.loss_consistency); None when that loss is off
    embedding: torch.Tensor | None = None
    embedding_mirrored: torch.Tensor | None = None
    source: np.ndarray | None = None  # (N,) str: each photo's source, its key's prefix (key_sources); None: unknown

    def __post_init__(self):
        n = self.latents.shape[0]
        shapes = {"latents": (n, 32, 16, 16), "mask": (n, 1, 16, 16), "identity": (n, IDENTITY_DIM),
                  "expression": (n, EXPRESSION_DIM)}  # fmt: skip
        if self.latents_mirrored is not None:
            shapes["latents_mirrored"] = (n, 32, 16, 16)
        for name in ("embedding", "embedding_mirrored"):
            if getattr(self, name) is not None:
                shapes[name] = (n, getattr(self, name).shape[1])
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise MienError(f"training tensors: {name} should be {shape}, got {tuple(getattr(self, name).shape)}")
        if len(self.ref_candidates) != n:
            raise MienError(f"training tensors: {len(self.ref_candidates)} ref_candidates for {n} samples")
        if self.source is not None and len(self.source) != n:
            raise MienError(f"training tensors: {len(self.source)} sources for {n} samples")

    def __len__(self) -> int:
        return self.latents.shape[0]

    def to(self, device) -> "TrainTensors":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TrainTensors(move(self.latents), move(self.mask), move(self.identity), move(self.expression),
                            self.ref_candidates, move(self.latents_mirrored), move(self.embedding),
                            move(self.embedding_mirrored), self.source)  # fmt: skip


class SourceDraw:
    """The samples of each epoch under per-source weights: a photo of a source of weight w is drawn
    floor(w) times, and round(frac(w) x the source's photos) of them, chosen afresh from (seed, epoch),
    once more; so every epoch has the same length and a source's share is w times its unweighted share
    (weight 0.5: half its photos each epoch, a different half; 0: none). Unnamed sources weigh 1.
    ``SourceDraw.of`` gives None when every weight is 1: the epoch is every sample once, as without weights.
    Why: the posed pairs (one person, one sitting, different expressions) are the pairs that teach editing;
    weighting their source up shows the model more of them without leaving the other sources out."""

    def __init__(self, source: np.ndarray, weights: dict[str, float], seed: int = 0):
        known = sorted(set(source.tolist()))
        w = np.ones(len(source))
        for name, weight in weights.items():
            w[source == source_prefix(name, known, f"source weight {name}={weight:g}")] = weight
        self._source, self.seed, whole = source, seed, np.floor(w).astype(np.int64)
        self._base = np.repeat(np.arange(len(source)), whole)
        self._extra = []  # (the source's photos, how many of them are drawn once more each epoch)
        for name in known:
            members = np.flatnonzero(source == name)
            k = int(round((w[members[0]] - whole[members[0]]) * len(members)))
            if k:
                self._extra.append((members, k))
        self.size = len(self._base) + sum(k for _, k in self._extra)

    @classmethod
    def of(cls, source: np.ndarray | None, weights: dict[str, float], seed: int = 0) -> "SourceDraw | None":
        ones = all(w == 1 for w in weights.values())
        if source is None:
            if ones:
                return None
            raise MienError("source weights need each photo's source (the pack's keys): train on --pack or "
                            "--chunks, or leave --source-weight out")  # fmt: skip
        draw = cls(source, weights, seed)  # checks the names
        return None if ones else draw

    def samples(self, epoch: int) -> np.ndarray:
        """(size,) int64 sample indices of the epoch, unshuffled (the loop permutes them)."""
        rng = np.random.default_rng([self.seed, epoch, 1])
        extra = [rng.choice(members, k, replace=False) for members, k in self._extra]
        return np.concatenate([self._base, *extra]).astype(np.int64)

    def draws(self) -> dict[str, int]:
        """Draws per epoch of each source (the run's log says them)."""
        names, counts = np.unique(self._source[self.samples(0)], return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


class FaceLatentDataset(Dataset):
    """Samples of ``TrainTensors`` with the epoch's identity references and mirroring applied.

    ``batch(indices, epoch)`` gathers a whole batch at once (the training loop's path; the tensors
    may live on the GPU); ``__getitem__`` serves one sample of ``self.epoch`` for DataLoader users.
    """

    def __init__(self, tensors: TrainTensors, seed: int = 0, flip_prob: float = 0.0, reference: bool = False,
                 self_reference: float = 0.0, other_photo: bool = False, other_max_pose: float | None = None,
                 other_max_distance: float | None = None):
        if flip_prob > 0 and tensors.latents_mirrored is None:
            raise MienError("flip_prob > 0 needs latents_mirrored (latents of the mirrored photos): "
                            "TAEF2 latents cannot be mirrored by flipping them (see mien.train.data); "
                            "train with flip_prob 0 (--flip-prob 0) on tensors without them")  # fmt: skip
        self.tensors, self.seed, self.flip_prob, self.epoch = tensors, seed, flip_prob, 0
        self.reference, self.other_photo = reference, other_photo
        if not 0.0 <= self_reference <= 1.0:
            raise MienError(f"self_reference {self_reference} must be a chance from 0 to 1")
        self.self_reference = self_reference
        check_pair_limits(other_max_pose, other_max_distance)
        self.other_max_pose, self.other_max_distance = other_max_pose, other_max_distance
        counts = np.array([len(c) for c in tensors.ref_candidates])
        self._counts, self._offsets = counts, np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat = [np.asarray(c, dtype=np.int64) for c in tensors.ref_candidates]
        self._flat = np.concatenate(flat + [np.zeros(1, np.int64)])  # padded: never empty
        self._plans: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.tensors)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        item = self.batch(torch.tensor([i]), self.epoch)
        return {**{k: v[0] for k, v in item.items() if k != "cond"}, "cond": {k: v[0] for k, v in item["cond"].items()}}

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reference index (N,), mirror flag (N,), own-latent reference flag (N,)) of an epoch, from
        (seed, epoch) only. A reference index equal to the sample's own means "none" unless flagged."""
        if epoch not in self._plans:
            rng = np.random.default_rng([self.seed, epoch])
            pick = self._offsets + np.floor(rng.random(len(self)) * self._counts).astype(np.int64)
            ref = np.where(self._counts > 0, self._flat[np.minimum(pick, len(self._flat) - 1)], np.arange(len(self)))
            flip = rng.random(len(self)) < self.flip_prob
            own = rng.random(len(self)) < self.self_reference  # drawn last: earlier plans are unchanged
            ref = np.where(own, np.arange(len(self)), ref)
            self._plans = {epoch: (torch.from_numpy(ref), torch.from_numpy(flip), torch.from_numpy(own))}
        return self._plans[epoch]

    def batch(self, indices: torch.Tensor, epoch: int) -> dict:
        """Float32 ``latents``, ``mask`` and ``cond`` {identity, expression[, reference]} for ``indices``;
        with ``other_photo`` also ``other_latents`` (the identity photo's latent, mirrored with the sample)
        and ``other_ok`` (True where that is another photo, not the sample's own, within the pair limits); with
        embeddings in the tensors also ``identity_target`` (and with ``other_photo`` ``own_identity_target``, the
        sample's own photo's embedding): the embedding of the photo whose identity vector is the sample's
        condition (mirrored with the sample)."""
        t = self.tensors
        ref, flip, own = (p[indices.cpu()].to(t.latents.device) for p in self.plan(epoch))
        idx = indices.to(t.latents.device)
        latents, mask, expression = t.latents[idx].float(), t.mask[idx].float(), t.expression[idx].float()
        if self.flip_prob > 0:  # no flip.any() test: it would sync with the GPU every step
            f4 = flip.view(-1, 1, 1, 1)
            latents = torch.where(f4, t.latents_mirrored[idx].float(), latents)
            mask = torch.where(f4, mask.flip(-1), mask)
            expression = torch.where(flip.view(-1, 1), mirror_expression(expression), expression)
        cond = {"identity": t.identity[ref].float(), "expression": expression}
        if self.reference:
            ref_latents = t.latents[ref].float()
            if self.flip_prob > 0:
                ref_latents = torch.where(flip.view(-1, 1, 1, 1), t.latents_mirrored[ref].float(), ref_latents)
            none = (ref == idx) & ~own
            cond["reference"] = torch.where(none.view(-1, 1, 1, 1), 0.0, ref_latents)
        out = {"latents": latents, "mask": mask, "cond": cond}
        if self.other_photo:  # the identity photo's latent, where it is another photo (consistency start "other")
            other = t.latents[ref].float()
            if self.flip_prob > 0:
                other = torch.where(flip.view(-1, 1, 1, 1), t.latents_mirrored[ref].float(), other)
            out["other_latents"], out["other_ok"] = other, (ref != idx) & self._pair_within_limits(idx, ref)
        if t.embedding is not None:
            def embedding(rows):
                e = t.embedding[rows].float()
                if self.flip_prob > 0 and t.embedding_mirrored is not None:
                    e = torch.where(flip.view(-1, 1), t.embedding_mirrored[rows].float(), e)
                return e

            out["identity_target"] = embedding(ref)
            if self.other_photo:  # started from the identity photo, the prediction is judged against the sample's own
                out["own_identity_target"] = embedding(idx)
        return out

    def _pair_within_limits(self, idx: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """(B,) bool: photo ``idx`` and its identity photo ``ref`` are within ``other_max_pose`` and
        ``other_max_distance`` (module docstring); all True without limits."""
        t, ok = self.tensors, torch.ones_like(idx, dtype=torch.bool)
        if self.other_max_pose is not None:  # unmirrored: mirroring negates both photos' yaw and roll alike
            pose = (t.expression[ref, -3:].float() - t.expression[idx, -3:].float()).abs().amax(-1) * POSE_SCALE
            ok &= pose <= self.other_max_pose
        if self.other_max_distance is not None:
            ok &= (t.identity[ref].float() - t.identity[idx].float()).norm(dim=-1) <= self.other_max_distance
        return ok


def latent_stats(latents: torch.Tensor, mask: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of latents over real-pixel cells (mask-weighted), in chunks."""
    total = s1 = s2 = 0.0
    for i in range(0, latents.shape[0], chunk):
        z, m = latents[i : i + chunk].double(), mask[i : i + chunk].double()
        total = total + m.sum()
        s1 = s1 + (z * m).sum((0, 2, 3))
        s2 = s2 + (z * z * m).sum((0, 2, 3))
    mean = s1 / total
    std = (s2 / total - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()
