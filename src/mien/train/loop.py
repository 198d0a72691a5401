"""Training loop of the built-in model: accelerate, AdamW, EMA, resumable checkpoints.

Read top to bottom, ``train`` is the whole recipe (DiT's train.py shape): build, resume if a
checkpoint is there, step until done or out of time, checkpoint, save the EMA weights and a loss plot.

Checkpoint: one file ``checkpoint.pt`` in the run folder, replaced atomically (written to a temporary
name, then ``os.replace``), holding model, EMA, optimizer, step and every RNG state (torch, CUDA,
numpy, python). Batches are a pure function of (seed, step) (``FaceLatentDataset.plan`` and the
per-epoch permutation), and the remaining randomness (t, noise, dropout) comes from the restored
global RNGs, so a resumed run reproduces the uninterrupted one exactly on CPU (tests/test_train.py);
on GPU up to non-deterministic kernels.

EMA: ``diffusers.training_utils.EMAModel``; its default warm-up uses decay min(ema_decay,
(1 + n) / (10 + n)) at update n, so early weights are not dominated by the random init.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from mien.builtin.config import ModelConfig, TrainConfig, from_dict, load_json, save_json, to_dict
from mien.builtin.loss import FlowMatchingLoss
from mien.builtin.model import MienModel
from mien.errors import MienError
from mien.train.data import FaceLatentDataset, SourceDraw, TrainTensors, latent_stats
from mien.train.loss_consistency import LOSS_NAMES, ConsistencyFeedback, FeedbackNets, feedback_step

CHECKPOINT, LOSS_CSV, LOSS_PNG, FINAL = "checkpoint.pt", "loss.csv", "loss.png", "model"
CSV_FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s")
FEEDBACK_FIELDS = ("flow", *LOSS_NAMES)  # loss.csv's extra columns when the consistency losses are on


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, tensors: TrainTensors, out_dir: str | Path,
          time_budget_s: float | None = None, stop_after: int | None = None,
          feedback_nets: FeedbackNets | None = None) -> Path:  # fmt: skip
    """Train (or resume) in ``out_dir``; returns the folder of the saved EMA model once finished.

    ``time_budget_s``: stop and checkpoint before this much wall-clock time has passed.
    ``stop_after``: stop and checkpoint on reaching this step (to split a run into calls).
    ``feedback_nets``: the consistency losses' nets (default: the real ones, loaded when a weight is > 0).
    """
    start, out = time.monotonic(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    use_bf16 = train_cfg.bf16 and torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not torch.cuda.is_available())
    _seed_all(train_cfg.seed + accelerator.process_index)
    if train_cfg.init_from and (model_cfg.latent_mean is None or model_cfg.latent_std is None):
        # keep the statistics the initial weights were trained with
        init_cfg = load_json(ModelConfig, Path(train_cfg.init_from) / "config.json")
        model_cfg = dataclasses.replace(model_cfg, latent_mean=init_cfg.latent_mean, latent_std=init_cfg.latent_std)
    if model_cfg.latent_mean is None or model_cfg.latent_std is None:
        mean, std = latent_stats(tensors.latents, tensors.mask)
        model_cfg = dataclasses.replace(model_cfg, latent_mean=mean, latent_std=std)
    model = MienModel(model_cfg)
    if train_cfg.init_from:
        model.load_weights_from(train_cfg.init_from)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                                  fused=torch.cuda.is_available())  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    net = accelerator.unwrap_model(model)
    ema = EMAModel(net.parameters(), decay=train_cfg.ema_decay, foreach=True)
    step = _resume(out / CHECKPOINT, net, optimizer, ema, accelerator)
    if step and accelerator.process_index:  # the checkpoint holds rank 0's RNG; others start afresh
        _seed_all(train_cfg.seed + accelerator.process_index + 7919 * step)
    if accelerator.is_main_process:
        save_json(net.config, out / "model_config.json")
        save_json(train_cfg, out / "train_config.json")

    if train_cfg.self_reference and not net.config.reference_pool:
        raise MienError("self_reference needs a model with reference_pool > 0: a full-detail copy of its own "
                        "photo would teach it to copy the target, expression included (train/data.py)")
    feedback = _feedback(train_cfg, net, feedback_nets, accelerator.device)
    data = FaceLatentDataset(tensors.to(accelerator.device), train_cfg.seed, train_cfg.flip_prob,
                             net.config.reference, train_cfg.self_reference,
                             other_photo=feedback is not None and feedback.start == "other",
                             other_max_pose=train_cfg.other_max_pose,
                             other_max_distance=train_cfg.other_max_distance)  # fmt: skip
    loss_fn = FlowMatchingLoss(train_cfg.t_sampling)
    batches = _batch_indices(len(data), train_cfg, accelerator, tensors.source)
    log = _LossLog(out / LOSS_CSV, step, accelerator.is_main_process, feedback is not None)
    save_s = step_s = 0.0
    end = train_cfg.steps if stop_after is None else min(train_cfg.steps, stop_after)
    while step < end:
        t_step = time.monotonic()
        epoch, indices = batches(step)
        batch = data.batch(indices, epoch)
        null = _drop_all(net, len(indices), train_cfg.drop_all_prob, accelerator.device)
        for group in optimizer.param_groups:
            group["lr"] = train_cfg.lr * min(1.0, (step + 1) / max(1, train_cfg.warmup_steps))
        parts = None
        with accelerator.autocast():
            if feedback is None:  # today's step, untouched (all consistency weights 0)
                loss = loss_fn(model, net.normalize(batch["latents"]), batch["cond"], batch["mask"], null)
            else:
                loss, parts = feedback_step(loss_fn, model, net, feedback, batch, null)
        accelerator.backward(loss)
        if train_cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(net.parameters())
        step += 1
        log.add(step, loss.detach(), optimizer.param_groups[0]["lr"], train_cfg, accelerator, parts)
        step_s = max(time.monotonic() - t_step, 0.9 * step_s)  # decaying max: safe against slow steps
        out_of_time = time_budget_s is not None and time.monotonic() - start + 2 * (step_s + save_s) > time_budget_s
        stop = _any_process(out_of_time, accelerator) or step >= end
        if stop or step % train_cfg.checkpoint_every == 0:
            t0 = time.monotonic()
            _save_checkpoint(out / CHECKPOINT, net, optimizer, ema, step, accelerator)
            save_s = time.monotonic() - t0
        if stop:
            break
    log.close()
    if step < train_cfg.steps:
        accelerator.print(f"stopped at step {step}/{train_cfg.steps}; run again with the same out_dir to resume")
        return out
    if accelerator.is_main_process:
        _save_ema_model(net, ema, out / FINAL)
        plot_loss(out / LOSS_CSV, out / LOSS_PNG)
    accelerator.wait_for_everyone()
    return out / FINAL


def _feedback(cfg: TrainConfig, net: MienModel, nets: FeedbackNets | None, device) -> ConsistencyFeedback | None:
    """The consistency losses when a weight is > 0 (None: today's flow loss alone). The decoder judged
    through is the starting model's own (its config's ``decoder`` in ``init_from``), else TAEF2's."""
    if cfg.expression_weight <= 0 and cfg.identity_weight <= 0:
        return None
    if nets is None:
        from mien.train.loss_consistency import load_feedback_nets

        decoder = Path(cfg.init_from) / net.config.decoder if cfg.init_from and net.config.decoder else None
        nets = load_feedback_nets(device, decoder, cfg.expression_weight > 0, cfg.identity_weight > 0)
    return ConsistencyFeedback(nets, cfg.expression_weight, cfg.identity_weight, cfg.feedback_t_max,
                               cfg.feedback_samples, cfg.feedback_start)  # fmt: skip


def _batch_indices(n: int, cfg: TrainConfig, accelerator: Accelerator, source=None):
    """step -> (epoch, this process's sample indices); one fixed permutation per (seed, epoch) of the epoch's
    draws: every sample once, or with ``cfg.source_weights`` (``source``: each sample's) each source's samples
    as often as its weight says (``SourceDraw``; all weights 1: the same indices as none)."""
    draw = SourceDraw.of(source, cfg.source_weights, cfg.seed)
    size = n if draw is None else draw.size
    if size < cfg.batch_size:
        raise MienError(f"batch_size {cfg.batch_size} is larger than the {size} training samples of an epoch")
    if cfg.batch_size % accelerator.num_processes:
        raise MienError(f"batch_size {cfg.batch_size} must divide over {accelerator.num_processes} processes")
    if draw is not None:
        accelerator.print(f"source weights {cfg.source_weights}: {size} draws per epoch of {n} photos, {draw.draws()}")
    per_epoch, cache = size // cfg.batch_size, {}

    def indices(step: int):
        epoch, pos = divmod(step, per_epoch)
        if epoch not in cache:
            cache.clear()
            perm = torch.randperm(size, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            cache[epoch] = perm if draw is None else torch.from_numpy(draw.samples(epoch))[perm]
        chunk = cache[epoch][pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        return epoch, chunk[accelerator.process_index :: accelerator.num_processes]

    return indices


def _any_process(flag: bool, accelerator: Accelerator) -> bool:
    """True if ``flag`` is set on any process, so all stop at the same step (no one waits forever)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([flag], device=accelerator.device)).any())


def _drop_all(net: MienModel, batch: int, prob: float, device) -> dict | None:
    """Joint dropout: the same samples get every stream's null tokens (the fully unconditional case)."""
    if prob <= 0:
        return None
    drop = torch.rand(batch, device=device) < prob
    return {name: drop for name in net.stream_names}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU byte tensors
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _save_checkpoint(path: Path, net, optimizer, ema: EMAModel, step: int, accelerator: Accelerator) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                 "ema": ema.state_dict(), "rng": _rng_state(), "model_config": to_dict(net.config)}  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()


def _resume(path: Path, net, optimizer, ema: EMAModel, accelerator: Accelerator) -> int:
    """Load ``path`` if it exists (returns its step), else 0. The model config must match."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location=accelerator.device, weights_only=True)
    saved = from_dict(ModelConfig, state["model_config"])
    if to_dict(saved) != to_dict(net.config):
        raise MienError(f"{path} was written for a different model config; use a new output folder")
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    ema.load_state_dict(state["ema"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _save_ema_model(net: MienModel, ema: EMAModel, directory: Path) -> None:
    ema.store(net.parameters())
    ema.copy_to(net.parameters())
    net.save_pretrained(directory, dtype=torch.float16)
    ema.restore(net.parameters())


class _LossLog:
    """Mean loss every ``log_every`` steps to CSV (rows past a resumed step are dropped) and stdout; with
    the consistency losses on, also the mean flow loss and each unweighted consistency loss."""

    def __init__(self, path: Path, step: int, main: bool, feedback: bool = False):
        self.path, self.main, self.total, self.count, self.parts = path, main, 0.0, 0, {}
        self.t0 = self.t_start = time.monotonic()
        rows = _read_rows(path) if path.is_file() else []
        kept = [r for r in rows if int(r["step"]) <= step]
        self.file = open(path, "w", newline="") if main else None
        if main:
            fields = CSV_FIELDS + (FEEDBACK_FIELDS if feedback else ())
            self.writer = csv.DictWriter(self.file, fields, restval="", extrasaction="ignore")
            self.writer.writeheader()
            self.writer.writerows(kept)
        self.elapsed0 = float(kept[-1]["elapsed_s"]) if kept else 0.0

    def add(self, step: int, loss: torch.Tensor, lr: float, cfg: TrainConfig, accelerator: Accelerator,
            parts: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        self.total, self.count = self.total + loss, self.count + 1
        for name, value in (parts or {}).items():
            self.parts[name] = self.parts.get(name, 0.0) + value
        if step % cfg.log_every and step != cfg.steps:
            return
        now = time.monotonic()
        mean = accelerator.reduce(self.total / self.count, reduction="mean").item()
        row = {"step": step, "loss": f"{mean:.6f}", "lr": f"{lr:.3g}",
               "images_per_s": f"{cfg.batch_size * self.count / (now - self.t0):.1f}",
               "elapsed_s": f"{self.elapsed0 + now - self.t_start:.1f}"}  # fmt: skip
        for name, total in self.parts.items():
            row[name] = f"{accelerator.reduce(total / self.count, reduction='mean').item():.6f}"
        if self.main:
            self.writer.writerow(row)
            self.file.flush()
            print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        self.total, self.count, self.t0, self.parts = 0.0, 0, now, {}

    def close(self) -> None:
        if self.file:
            self.file.close()


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_loss(csv_path: Path, png_path: Path) -> None:
    """Loss against step, log scale, as a PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rows(csv_path)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set(xlabel="step", ylabel="flow-matching loss (masked MSE)", yscale="log", title=csv_path.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
