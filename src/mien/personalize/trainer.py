"""The personalisation loop: a peft LoRA on the backbone, AdamW, the weighted losses, resumable.

Read top to bottom, :func:`train_person` is the recipe: wrap the UNet with a LoRA, resume from the
person folder's checkpoint if it holds one for the same photos and settings, draw the prior faces (first
run only: they live in the checkpoint), step until done or out of time, save the adapter and the card.

Accelerate places the model and optimiser (CPU or one GPU, the same code). Every random draw of step s
comes from a generator seeded by (seed, s) (:class:`mien.personalize.losses.Step`), and the checkpoint
holds the LoRA, the optimiser state and the prior faces, so a killed run resumed from its last
checkpoint ends with the same weights as the uninterrupted one (exactly on the CPU; tests). With a time
budget the loop stops while there is still time to write the adapter: the folder is usable at once, and
rerunning the command continues the remaining steps.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mien.errors import MienError
from mien.personalize import lora
from mien.personalize.config import PersonalizeConfig
from mien.personalize.losses import (DirectionLoss, EditIdentityLoss, ExpressionLoss, FlowLoss, IdentityLoss,
                                     LandmarkLoss, PersonTensors, PriorLoss, Step, identity_target)  # fmt: skip

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    directory: Path
    steps_done: int
    finished: bool
    time_s: float  # training time over every run of this folder
    adapter_bytes: int
    losses: list[dict] = field(default_factory=list)  # per step of this run: total and each term


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_person(model, person: PersonTensors, config: PersonalizeConfig, out_dir: str | Path, *,
                 base_sha256: str, photos: list[dict], expression=None, prior_expressions: torch.Tensor | None = None,
                 card_extra: dict | None = None, time_budget_s: float | None = None, start: float | None = None,
                 stop_after: int | None = None, progress: bool = True, identity_nets=None) -> TrainResult:  # fmt: skip
    """Personalise ``model`` (an :class:`mien.builtin.model.AdaptedModel`; its UNet gets the LoRA) on
    ``person`` and write the adapter and card into ``out_dir``.

    ``photos``: [{"name", "sha256"}] of the photos used (a checkpoint of other photos is refused);
    ``expression``: (measure, targets) of the expression-crafting loss (its weight is ignored without) and of the
    edit-identity gate (``config.edit_identity_gate``, an error without);
    ``identity_nets``: :class:`mien.train.loss_consistency.FeedbackNets` (decode, embed) of the identity and
    edit-identity losses (:func:`mien.personalize.run.identity_nets`; their weights are ignored without);
    ``prior_expressions`` (M, 55): the prior faces' expressions (default: the basic labels in turn);
    ``time_budget_s``: stop, save and return before this much time since ``start`` has passed;
    ``stop_after``: stop at this step as if killed after its checkpoint (tests, split GPU calls).
    """
    from accelerate import Accelerator

    start = time.monotonic() if start is None else start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    w = config.losses
    lcfg = lora.lora_config(config.rank, config.alpha, config.targets)
    params = lora.add_lora(model.backbone.unet, lcfg)
    model.eval()  # no stream dropout: the conditions are given
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    net = accelerator.unwrap_model(model)
    person = dataclasses.replace(person, **{f.name: getattr(person, f.name).to(accelerator.device)
                                            for f in dataclasses.fields(person)})  # fmt: skip
    identity = {"photos": photos, "base_model_sha256": base_sha256, "config": dataclasses.asdict(config)}
    done = _finished_card(out, identity)
    if done is not None:  # the same photos, settings and base model were personalised here already
        from safetensors.torch import load_file

        lora.set_lora_state(net.backbone.unet, {k: v.float() for k, v in load_file(out / lora.ADAPTER_WEIGHTS).items()})
        print(f"mien: {out} is personalised already on these photos with these settings", file=sys.stderr)
        return TrainResult(out, done["steps_done"], True, done["train_time_s"], done["adapter_bytes"])
    step, elapsed0, prior = _resume(out / CHECKPOINT, identity, net, optimizer, accelerator.device)
    if prior is None and w.prior > 0:
        from mien.personalize.prior import prior_expressions as default_expressions
        from mien.personalize.prior import sample_prior

        exprs = prior_expressions if prior_expressions is not None else default_expressions(config.prior_samples, config.seed)
        lora.set_scale(net.backbone.unet, 0.0)  # the base model draws them (the LoRA is still zero here anyway)
        prior = sample_prior(net, exprs, config.prior_steps, torch.Generator().manual_seed(config.seed * 1_000_003 + 999_999))
        lora.set_scale(net.backbone.unet, 1.0)
    terms = [(w.flow, FlowLoss(), 1, "flow"), (w.landmarks, LandmarkLoss(), 1, "landmarks")]
    if w.prior > 0:
        terms.append((w.prior, PriorLoss(config.prior_batch), 1, "prior"))
    measure = expression[0] if expression is not None else None
    if w.expression > 0 and expression is not None:
        targets = expression[1]
        terms.append((w.expression, ExpressionLoss(measure, targets, config.expression_batch), config.expression_every,
                      "expression"))  # fmt: skip
    target = identity_target(identity_nets, person) if identity_nets is not None and w.judge_identity else None
    if w.identity > 0 and target is not None:
        terms.append((w.identity, IdentityLoss(identity_nets, target, config.identity_t_max), 1,
                      "identity"))  # fmt: skip
    if w.edit_identity > 0 and target is not None:  # last: its draws leave the other terms' unchanged
        from mien.personalize.prior import label_blendshapes

        targets = torch.from_numpy(np.stack(list(label_blendshapes().values())))
        if (config.edit_identity_gate > 0 or config.edit_identity_hold > 0) and measure is None:
            raise MienError("edit_identity_gate and edit_identity_hold read the prediction's blendshapes: pass "
                            "expression=(measure, targets)")  # fmt: skip
        eid = EditIdentityLoss(identity_nets, target, targets, config.edit_identity_batch, measure=measure,
                               gate=config.edit_identity_gate, hold=config.edit_identity_hold)  # fmt: skip
        terms.append((w.edit_identity, eid, 1, "edit_identity"))
    if w.direction > 0:  # last of all: its one draw leaves every other term's unchanged
        from mien.personalize.prior import label_blendshapes

        targets = torch.from_numpy(np.stack(list(label_blendshapes().values()))).float()
        terms.append((w.direction, DirectionLoss(targets, config.direction_batch), 1, "direction"))
    terms = [t for t in terms if t[0] > 0]
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = _progress(progress, config.steps, step)
    run_t0, step_s, save_s, losses = time.monotonic(), 0.0, 0.0, []
    finished_early = False
    try:
        while step < end:
            t0 = time.monotonic()
            s = Step(net, person, prior, step_generator(config.seed, step), config.batch, config.flip_prob)
            total, parts = 0.0, {}
            for weight, fn, every, name in terms:
                if step % every == 0:
                    value = fn(s)
                    parts[name] = float(value.detach())
                    total = total + weight * value
            accelerator.backward(total)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append({"step": step, "total": float(total.detach()), **parts})
            step_s = max(time.monotonic() - t0, 0.9 * step_s)  # decaying max: safe against one slow step
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]['total']:.3f}")
            out_of_time = time_budget_s is not None and time.monotonic() - start + 2 * step_s + save_s + 1.0 > time_budget_s
            if out_of_time or step >= end or step % config.checkpoint_every == 0:
                t_save = time.monotonic()
                _save_checkpoint(out / CHECKPOINT, identity, net, optimizer, step, elapsed0 + time.monotonic() - run_t0, prior)
                save_s = time.monotonic() - t_save
            if out_of_time and step < end:
                finished_early = True
                break
    except KeyboardInterrupt:  # Ctrl-C: keep every finished step (the same command resumes)
        _save_checkpoint(out / CHECKPOINT, identity, net, optimizer, step, elapsed0 + time.monotonic() - run_t0, prior)
        raise
    if bar:
        bar.close()
    elapsed = elapsed0 + time.monotonic() - run_t0
    finished = step >= config.steps
    size = lora.save_adapter(net.backbone.unet, lcfg, out)
    card = {**(card_extra or {}), **identity, "steps": config.steps, "steps_done": step, "finished": finished,
            "train_time_s": round(elapsed, 1), "device": str(accelerator.device), "adapter_bytes": size}  # fmt: skip
    lora.write_card(out, card)
    if finished:
        (out / CHECKPOINT).unlink(missing_ok=True)
    elif finished_early:
        print(f"mien: time budget reached at step {step}/{config.steps}; the adapter in {out} is usable now, and "
              "running the same command again continues training", file=sys.stderr)  # fmt: skip
    return TrainResult(out, step, finished, elapsed, size, losses)


def _finished_card(out: Path, identity: dict) -> dict | None:
    """The folder's card when it records a finished run of exactly this run (None otherwise)."""
    import json

    try:
        card = json.loads((out / lora.CARD_NAME).read_text())
    except (OSError, ValueError):
        return None
    same = all(card.get(k) == v for k, v in identity.items())
    return card if same and card.get("finished") and (out / lora.ADAPTER_WEIGHTS).is_file() else None


def _progress(on: bool, total: int, initial: int):
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="personalising", unit="step", file=sys.stderr, dynamic_ncols=True)


def _save_checkpoint(path: Path, identity: dict, net, optimizer, step: int, elapsed: float, prior) -> None:
    state = {"identity": identity, "step": step, "elapsed": elapsed, "lora": lora.lora_state(net.backbone.unet),
             "optimizer": optimizer.state_dict(),
             "prior": None if prior is None else {"latents": prior.latents.cpu(), "expression": prior.expression.cpu()}}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path: Path, identity: dict, net, optimizer, device):
    """(step, training time so far, prior faces) from ``path`` when it holds this run; (0, 0, None) without."""
    from mien.personalize.losses import PriorSet

    if not path.is_file():
        return 0, 0.0, None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say so in one line
        raise MienError(f"{path} cannot be read ({type(e).__name__}); delete it to start this person afresh") from None
    if state["identity"] != identity:
        raise MienError(f"{path.parent} holds an unfinished run with other photos, settings or base model; "
                        "use another --out folder, or delete it to start afresh")  # fmt: skip
    lora.set_lora_state(net.backbone.unet, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    p = state["prior"]
    prior = None if p is None else PriorSet(p["latents"].to(device), p["expression"].to(device))
    return int(state["step"]), float(state["elapsed"]), prior
