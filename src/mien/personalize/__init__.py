"""Personalisation (FaceExpr's per-person fine-tuning): a peft LoRA on the backbone from a few photos.

config.py   PersonalizeConfig, LossWeights: the typed settings, saved in the card and the checkpoint
inputs.py   the photos read, aligned, checked to show one person (face-api), measured; inputs.safetensors
losses.py   the loss callables: flow matching, landmark-weighted, prior preservation, expression crafting
prior.py    prior faces drawn from the base model (DreamBooth)
lora.py     the LoRA (peft) on any diffusers UNet, the person folder, the base-model check
trainer.py  the resumable loop (accelerate), time budget, progress bar
run.py      photos -> person folder, the one call `mien personalize` makes
"""

from mien.personalize.config import LossWeights, PersonalizeConfig
from mien.personalize.lora import load_person
from mien.personalize.trainer import TrainResult, train_person

__all__ = ["LossWeights", "PersonalizeConfig", "TrainResult", "load_person", "train_person"]
