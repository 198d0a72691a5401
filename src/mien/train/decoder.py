"""Fine-tuning TAEF2's decoder on the training faces.

Why: issue 5 expects ≥ 34 dB reconstruction PSNR on dev faces; the pretrained TAEF2, a general-purpose
autoencoder for FLUX.2, gives 32.4 dB on them (tests/test_taef2.py), lowest on the in-the-wild CFP
and London faces. Only the decoder is trained. The encoder, and so the latent space every built-in
model was trained in, stays the published one: the denoiser needs no retraining, and a fine-tuned
decoder is a drop-in replacement for decoding its outputs (``ModelConfig.decoder``).

Objective: mean squared error on real pixels only (the crop's ``fill`` region is mirrored padding,
faces128 README), after the frozen encoder; mirroring as augmentation; AdamW and an EMA of the
weights (``diffusers.training_utils.EMAModel``), as the denoiser's loop (mien.train.loop). Plain MSE
is what PSNR measures; TAESD-family decoders were trained with adversarial and perceptual terms as
well (github.com/madebyollin/taesd, README), so sharpness is checked on the outputs, not assumed.

The images live on the device as uint8 (a 24 MB chunk is ~12 k faces, 0.6 GB), so the encoder runs
on each batch; it is small next to the decoder's full-resolution layers.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file

from mien.errors import MienError
from mien.train.decoder_config import DecoderTrainConfig

DECODER_FILE = "taef2_decoder.safetensors"
CHECKPOINT = "decoder_checkpoint.pt"


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` (B, 1, H, W) is 1, all three channels."""
    return ((pred - target) ** 2 * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1)


@torch.no_grad()
def psnr(taef2, images: torch.Tensor, masks: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Per-image reconstruction PSNR in dB of uint8 ``images`` (N, 3, H, W), the output rounded to 8 bits
    as it is saved (tests/test_taef2.py); with ``masks`` over the real pixels only."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i: i + batch].float() / 255
        y = (taef2.decode(taef2.encode(x)) * 255).round() / 255
        m = torch.ones_like(x[:, :1]) if masks is None else masks[i: i + batch].float()
        mse = ((y - x) ** 2 * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * 3).clamp_min(1)
        out.append(10 * torch.log10(1 / mse.clamp_min(1e-10)))
    return torch.cat(out)


def finetune_decoder(taef2, images: torch.Tensor, masks: torch.Tensor, cfg: DecoderTrainConfig, out_dir: str | Path,
                     time_budget_s: float | None = None) -> dict:  # fmt: skip
    """Train ``taef2.decoder`` (in place; the EMA weights are written to ``out_dir/DECODER_FILE`` in fp16)
    on uint8 ``images`` (N, 3, H, W) with validity ``masks`` (N, 1, H, W). Resumes from the checkpoint
    in ``out_dir`` (atomic writes; every RNG state), so a run can span several calls. Returns a summary."""
    if images.dtype != torch.uint8 or images.ndim != 4 or masks.shape != (len(images), 1, *images.shape[2:]):
        raise MienError(f"decoder training needs uint8 images (N, 3, H, W) and masks (N, 1, H, W), got "
                        f"{images.dtype} {tuple(images.shape)} and {tuple(masks.shape)}")  # fmt: skip
    start, out = time.monotonic(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    dev = accelerator.device
    encoder = taef2.encoder.to(dev).eval().requires_grad_(False)
    decoder = taef2.decoder.to(dev).train().requires_grad_(True)
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(decoder.parameters(), decay=cfg.ema_decay)
    step, gen = 0, torch.Generator().manual_seed(cfg.seed)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        decoder.load_state_dict(ckpt["decoder"])
        opt.load_state_dict(ckpt["opt"])
        ema.load_state_dict(ckpt["ema"])
        step = ckpt["step"]
        gen.set_state(ckpt["gen"])
    ema.to(dev)
    decoder, opt = accelerator.prepare(decoder, opt)
    log = out / "decoder_loss.csv"
    new_log = not log.exists()
    t_log, n_log, seen = time.monotonic(), 0, 0
    with open(log, "a", newline="") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["step", "loss", "images_per_s", "elapsed_s"])
        while step < cfg.steps and (time_budget_s is None or time.monotonic() - start < time_budget_s):
            idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
            flip = torch.rand(cfg.batch_size, generator=gen) < cfg.flip_prob
            x = images[idx.to(images.device)].to(dev).float() / 255
            m = masks[idx.to(masks.device)].to(dev).float()
            f4 = flip.to(dev).view(-1, 1, 1, 1)
            x, m = torch.where(f4, x.flip(-1), x), torch.where(f4, m.flip(-1), m)
            with torch.no_grad():
                z = encoder(x)
            loss = masked_mse(decoder(z), x, m)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(decoder.parameters())
            step += 1
            n_log += cfg.batch_size
            seen += cfg.batch_size
            if step % cfg.log_every == 0:
                now = time.monotonic()
                writer.writerow([step, f"{loss.item():.6g}", f"{n_log / (now - t_log):.1f}", f"{now - start:.1f}"])
                f.flush()
                t_log, n_log = now, 0
    state = {"decoder": accelerator.unwrap_model(decoder).state_dict(), "opt": opt.state_dict(),
             "ema": ema.state_dict(), "step": step, "gen": gen.get_state(), "config": dataclasses.asdict(cfg)}  # fmt: skip
    tmp = ckpt_path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, ckpt_path)
    final = copy.deepcopy(accelerator.unwrap_model(decoder)).eval().requires_grad_(False)
    ema.copy_to(final.parameters())
    taef2.decoder = final
    save_file({k: v.detach().half().cpu().contiguous() for k, v in final.state_dict().items()}, out / DECODER_FILE,
              metadata={"config": json.dumps(dataclasses.asdict(cfg)), "step": str(step)})  # fmt: skip
    return {"step": step, "images_seen_this_call": seen, "elapsed_s": round(time.monotonic() - start, 1)}
