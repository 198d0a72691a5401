"""Sampling speed of the built-in model: mien's sampler against a diffusers-style scheduler loop.

    PYTHONPATH=src python3 scripts/bench_sampling.py --model src/mien/resources/model --device cuda

Both sides run the same UNet with both guidance streams (identity 2, expression 3: three branches
per step), 25 Euler steps on the same sigmas, from the same noise, and must give the same latents.
- "diffusers loop": diffusers' FlowMatchEulerDiscreteScheduler driven step by step the way diffusers
  pipelines do (``scheduler.step`` on the model output, the three guidance branches batched together).
- "mien eager": the pure Euler sampler over the guided denoiser, the same UNet as is.
- "mien": the same, with ``--compile`` the UNet wrapped in ``torch.compile(mode="reduce-overhead")``
  (CUDA graphs: the 16x16 UNet is launch-bound); the sampler being a pure function of tensors is
  what lets the whole step be captured. Without ``--compile`` it equals "mien eager".
Both run under the same bf16 autocast on CUDA (fp32 on CPU); the equality check runs both in fp32.
"flowedit" times mien's default edit (``mien.sampling.flowedit`` at the default strength and guidance of
``mien.settings``: source and target predictions batched, fresh noise each step) on the same UNet
(compiled with ``--compile``), with the default recogniser guidance (``mien.builtin.recogniser_guidance``:
TAEF2 decoding and MobileFaceNet, forward and backward, at the late steps; with ``--compile`` that
embedding goes through ``torch.compile`` too, default mode) and, as
"flowedit_plain", without it; diffusers has no FlowEdit loop for this UNet to compare with.
Prints a table of images/s at each batch size; on CPU, also the end-to-end seconds for one image.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def diffusers_loop(model, cond, noise, steps, scales):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from mien.guidance.classifier_free import guided_velocity
    from mien.sampling import flow_sigmas

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    s = flow_sigmas(steps)
    t = (s / (1 + s))[:-1]  # the same grid in flow time (t = sigma / (1 + sigma)); diffusers appends 0
    sched.set_timesteps(sigmas=t.tolist(), device=noise.device)
    v = guided_velocity(model, cond, scales=scales)
    # mien's start x = noise * sigma_max in EDM units is x_t = noise * t_max in flow units
    x = noise * float(t[0])
    for t in sched.timesteps:
        x = sched.step(v(x, t / 1000), t, x).prev_sample
    return x


def mien_loop(model, cond, noise, steps, scales):
    from mien.guidance.classifier_free import guided_denoiser
    from mien.sampling import flow_sigmas, sample_euler

    sigmas = flow_sigmas(steps).to(noise.device)
    return sample_euler(guided_denoiser(model, cond, scales=scales), noise * sigmas[0], sigmas)


def flowedit_loop(model, cond, photo, steps, scales, strength, guide=None, contrast=1.0):
    """The pipeline's FlowEdit (mien.pipeline.MienPipeline): classifier-free guided velocity, the source and
    target rows in one pass, contrast guidance when ``contrast`` != 1."""
    from mien.guidance.classifier_free import guided_velocity
    from mien.guidance.contrast import contrast_pair
    from mien.sampling import flow_times, sample_flowedit

    velocity = guided_velocity(model, cond, scales=scales)
    source, target = cond["expression"].flip(0), cond["expression"]  # another source expression
    if contrast != 1.0:
        pair = contrast_pair(velocity, source, target, contrast)
    else:
        expressions = torch.cat([source, target])
        pair = lambda x, t: velocity(x, t, expressions)  # noqa: E731 - rows: source, then target
    g = torch.Generator(device=photo.device).manual_seed(0)
    return sample_flowedit(pair, photo, flow_times(steps, strength),
                           lambda k: torch.randn(photo.shape, generator=g, device=photo.device), correct=guide)


def recogniser_embedder(model, dev, compile=False):
    """The pipeline's recogniser-guidance embedding (mien.pipeline.MienPipeline._recogniser_guide), loaded once."""
    from mien.guidance.recogniser import latent_embedder
    from mien.models.identity import IdentityEncoder
    from mien.models.taef2 import TAEF2

    embed = latent_embedder(model, TAEF2.from_weights(decoder_path=model.decoder_path).to(dev), IdentityEncoder.from_weights().to(dev))
    # inductor, forward and backward; the TFLite interpreter's constants are Python ints (as numpy arrays
    # they would stop the capture at MobileFaceNet's RESHAPE)
    return torch.compile(embed) if compile else embed


def recogniser_guide(embed, b, dev, scale, until):
    """The default edit's guide with a stand-in target: its cost does not depend on the embedding's values."""
    from mien.guidance.recogniser import RecogniserGuide
    from mien.regions import edit_region

    target = torch.nn.functional.normalize(torch.randn(b, 192, device=dev), dim=1)
    return RecogniserGuide(embed, target, edit_region("background", dev), scale, until)


def timed(fn, sync, repeats=3):
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="src/mien/resources/model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    ap.add_argument("--compile", action="store_true")
    from mien.expression.targets import ExpressionRequest
    from mien.settings import LABEL_POLICY, GenerationSettings

    d = GenerationSettings().resolve(ExpressionRequest(mix={"happy": 1.0}))  # mien generate's, for a smile
    contrast = max(p["guidance_contrast"] for p in LABEL_POLICY.values() if "guidance_contrast" in p)

    ap.add_argument("--edit-guidance", type=float, nargs=2, metavar=("GI", "GE"),
                    default=[d.guidance_identity, d.guidance_expression],
                    help="identity and expression guidance of the flowedit timing (default: mien generate's)")
    ap.add_argument("--edit-strength", type=float, default=d.strength)
    ap.add_argument("--edit-recogniser", type=float, nargs=2, metavar=("G", "T"),
                    default=[d.recogniser_guidance, d.recogniser_guidance_until],
                    help="recogniser guidance scale and flow time of the flowedit timing (default: mien generate's)")
    ap.add_argument("--edit-contrast", type=float, default=contrast,
                    help="also time the flowedit with this contrast guidance (default: the labels' largest, what "
                         "mien generate uses for sad, angry, fearful and disgusted; 1: skip)")
    args = ap.parse_args()
    from mien.builtin.model import MienModel

    dev = torch.device(args.device)
    model = MienModel.from_pretrained(args.model).to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    embed = recogniser_embedder(model, dev, args.compile) if args.edit_recogniser[0] > 0 else None
    rows = []
    for b in args.batches:
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(b, 32, 16, 16, generator=g).to(dev)
        cond = {"identity": torch.nn.functional.normalize(torch.randn(b, 128, generator=g), dim=1).to(dev),
                "expression": torch.rand(b, 55, generator=g).to(dev)}
        if model.config.reference:  # a stand-in latent: speed does not depend on its values
            cond["reference"] = torch.randn(b, 32, 16, 16, generator=g).to(dev)
        scales = (2.0, 3.0)
        amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else (
            lambda: torch.autocast("cpu", enabled=False))
        with torch.no_grad():
            _, ref32 = timed(lambda: diffusers_loop(model, cond, noise, args.steps, scales), sync, repeats=1)
            _, ours32 = timed(lambda: mien_loop(model, cond, noise, args.steps, scales), sync, repeats=1)
            with amp():
                t_ref, _ = timed(lambda: diffusers_loop(model, cond, noise, args.steps, scales), sync)
            with amp():
                t_eager, _ = timed(lambda: mien_loop(model, cond, noise, args.steps, scales), sync)
            fast = model
            if args.compile:
                fast = copy.deepcopy(model)  # a shallow copy would share _modules and compile the original too
                fast.unet = torch.compile(fast.unet, mode="reduce-overhead")
            with amp():
                t_ours, _ = timed(lambda: mien_loop(fast, cond, noise, args.steps, scales), sync)
            with amp():
                t_plain, _ = timed(lambda: flowedit_loop(fast, cond, noise, args.steps, tuple(args.edit_guidance),
                                                         args.edit_strength), sync)
            guide = recogniser_guide(embed, b, dev, *args.edit_recogniser) if embed is not None else None
            with amp():
                t_edit, _ = timed(lambda: flowedit_loop(fast, cond, noise, args.steps, tuple(args.edit_guidance),
                                                        args.edit_strength, guide), sync)
            t_contrast = None
            if args.edit_contrast != 1.0:
                with amp():
                    t_contrast, _ = timed(lambda: flowedit_loop(fast, cond, noise, args.steps, tuple(args.edit_guidance),
                                                                args.edit_strength, guide, args.edit_contrast), sync)
        rows.append({"batch": b, "diffusers_loop_img_s": round(b / t_ref, 1), "mien_eager_img_s": round(b / t_eager, 1),
                     "mien_img_s": round(b / t_ours, 1), "compiled": args.compile, "speedup": round(t_ref / t_ours, 2),
                     "max_abs_diff_fp32": float((ours32 - ref32).abs().max()),
                     "flowedit_img_s": round(b / t_edit, 1), "flowedit_plain_img_s": round(b / t_plain, 1),
                     "flowedit_contrast_img_s": round(b / t_contrast, 1) if t_contrast else None})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                      "torch": torch.__version__, "steps": args.steps, "edit_guidance": args.edit_guidance,
                      "edit_strength": args.edit_strength, "edit_recogniser": args.edit_recogniser, "edit_contrast": args.edit_contrast, "rows": rows}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
