"""From photos to a person folder: what `mien personalize` does, as one library call.

:func:`personalize` loads the base model and the nets (MediaPipe's landmarker to align, face-api to check
the photos show one person and for the identity condition, TAEF2 to encode and decode, MediaPipe's
blendshape net in PyTorch for the expression-crafting loss), prepares the photos
(:mod:`mien.personalize.inputs`) and trains (:mod:`mien.personalize.trainer`). :func:`person_tensors`
and :func:`expression_measure` are the pieces a GPU job (no MediaPipe there) reuses on inputs prepared
here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mien.personalize.config import PersonalizeConfig
from mien.personalize.inputs import PersonInputs
from mien.personalize.losses import PersonTensors
from mien.personalize.trainer import TrainResult, train_person


def _warn(msg: str) -> None:
    print(f"mien: warning: {msg}", file=sys.stderr)


@torch.no_grad()
def person_tensors(inputs: PersonInputs, taef2, identity_encoder, device) -> PersonTensors:
    """The photos' latents (and of their mirror images), masks, conditions and the person's identity vector
    (face-api over every photo, renormalised: the condition generation uses)."""
    x = torch.from_numpy(inputs.crops).permute(0, 3, 1, 2).float().to(device)
    identity = F.normalize(identity_encoder.condition(x).mean(0), dim=0)
    return PersonTensors(taef2.encode(x / 255), taef2.encode(x.flip(-1) / 255), torch.from_numpy(inputs.mask).to(device),
                         torch.from_numpy(inputs.features).to(device), torch.from_numpy(inputs.expression).to(device),
                         identity)  # fmt: skip


def expression_measure(model, taef2, blendshape_net) -> tuple:
    """(measure, targets) of the expression-crafting loss: normalised latents -> blendshapes of the decoded
    face (differentiable), and the basic labels' blendshape targets."""
    from mien.guidance.blendshape import latent_blendshapes
    from mien.personalize.prior import label_blendshapes

    targets = torch.from_numpy(np.stack(list(label_blendshapes().values())))
    return latent_blendshapes(model, taef2, blendshape_net), targets


def identity_nets(taef2, device):
    """The identity loss's nets (:class:`mien.train.loss_consistency.FeedbackNets`): TAEF2's decoding (clamped
    to [0, 1], as the training's feedback decodes) and MobileFaceNet."""
    from mien.train.loss_consistency import FeedbackNets, mobilefacenet_embedder

    return FeedbackNets(decode=taef2.decode, embed=mobilefacenet_embedder(device))


def personalize(photos: list[str | Path], out: str | Path, config: PersonalizeConfig | None = None,
                model_dir: str = "default", device: str | None = None, time_budget_s: float | None = None,
                progress: bool = True, warn=_warn) -> TrainResult:  # fmt: skip
    """Personalise the base model on ``photos`` of one person into the folder ``out`` (module docstring)."""
    from mien import __version__
    from mien.builtin.model import MienModel
    from mien.face.landmarker import FaceLandmarker
    from mien.models.face_mesh import AlignedBlendshapes
    from mien.models.identity import IdentityEncoder
    from mien.models.taef2 import TAEF2
    from mien.personalize.inputs import prepare
    from mien.pipeline import default_model_dir

    start = time.monotonic()
    config = config or PersonalizeConfig()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    identity_encoder = IdentityEncoder.from_weights(mobilefacenet=False).to(dev)
    with FaceLandmarker(num_faces=2) as landmarker:
        inputs = prepare(landmarker, photos, identity_encoder, warn, dilate=config.landmark_dilate)
    model_path = default_model_dir() if str(model_dir) == "default" else Path(model_dir)
    model = MienModel.from_pretrained(model_path).to(dev)
    taef2 = TAEF2.from_weights(decoder_path=model.decoder_path).to(dev).eval().requires_grad_(False)
    tensors = person_tensors(inputs, taef2, identity_encoder, dev)
    expression = None
    if config.reads_blendshapes:
        expression = expression_measure(model, taef2, AlignedBlendshapes.from_weights().to(dev).requires_grad_(False))
    identity = identity_nets(taef2, dev) if config.losses.judge_identity else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inputs.save(out)
    photos_used = [{"name": Path(n).name, "sha256": h} for n, h in zip(inputs.names, inputs.sha256)]
    extra = {"mien_version": __version__, "skipped": inputs.skipped}
    return train_person(model, tensors, config, out, base_sha256=model.sha256, photos=photos_used, expression=expression,
                        card_extra=extra, time_budget_s=time_budget_s, start=start, progress=progress,
                        identity_nets=identity)  # fmt: skip
