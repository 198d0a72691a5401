"""Personalisation (FaceExpr's per-person fine-tuning): a peft LoRA on the backbone from a few photos.

config.py   PersonalizeConfig, LossWeights: the typed settings, saved in the card and the checkpoint
inputs.py   the photos read, aligned, checked to show one person (face-api), measured; inputs.safetensors
losses.py   the loss callables: flow matching, landmark-weighted, prior preservation, expression crafting
prior.py    prior faces drawn from the base model (DreamBooth)
lora.py     the LoRA (peft) on any diffusers UNet, the person folder, the base-model check
trainer.py  the resumable loop (accelerate), time budget, progress bar
run.py      photos -> person folder, the one call `mien personalize` makes
"""

import importlib

# Names are imported on first use (PEP 562) so that building the CLI parser, which reads
# PersonalizeConfig's defaults, does not import torch.
_EXPORTS = {"LossWeights": "config", "PersonalizeConfig": "config", "load_person": "lora",
            "TrainResult": "trainer", "train_person": "trainer"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mien.personalize' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mien.personalize.{_EXPORTS[name]}"), name)
