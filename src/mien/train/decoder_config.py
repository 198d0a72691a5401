"""The decoder fine-tune's settings (mien.train.decoder), apart from it so that the CLI can derive its flags
without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class DecoderTrainConfig:
    lr: float = _field(1e-4, "AdamW learning rate")
    batch_size: int = _field(128, "faces per step")
    steps: int = _field(100_000, "optimizer steps in the whole run (an upper bound: a call usually stops on its time budget)")
    ema_decay: float = _field(0.999, "EMA decay of the exported weights")
    flip_prob: float = _field(0.5, "mirror chance")
    weight_decay: float = _field(0.0, "AdamW weight decay (0: the weights start from a good decoder, do not pull them to zero)")
    seed: int = _field(0, "seed of batches and mirroring")
    log_every: int = _field(100, "steps between decoder_loss.csv rows")
