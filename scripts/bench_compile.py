"""CPU time of the hot modules eager against compiled (torch.compile's inductor backend, which needs a C++
compiler), on the built-in model at `mien generate`'s defaults, with the models loaded.

    python scripts/bench_compile.py [--parts unet critic e2e] [--labels happy fearful] [--repeats 10]
        [--threads 1] [--mode default|max-autotune-no-cudagraphs|jit-freeze|channels-last]

One edit each of happy (2 UNet rows) and sad (3 rows) records the real inputs of the UNet's call and of
the first recogniser-guided step; then, per part, in this process:

- unet: one UNet call per row count under inference_mode, eager then compiled: the first compiled call
  (the compile) and the median of ``--repeats`` calls after it, max abs difference of the outputs;
- critic: the recogniser guidance step's gradient (TAEF2 decode, MobileFaceNet, backward), in float32
  and under bfloat16 autocast, eager then with the score compiled;
- e2e: images per label as scripts/bench_generate_cpu.py makes them (edit and paste back, no PNGs),
  eager then with the UNet, TAEF2's decoder and MobileFaceNet compiled; per label the first image (compiled:
  the compile), the median seconds of the ``max(2, repeats // 3)`` images after it, and per seed the max and
  mean abs difference of the pasted photos' pixels (0..255) between eager and compiled.

Times are this process's CPU time (time.process_time, which other work on the machine inflates far less
than wall-clock time). Modes: "default" and "max-autotune-no-cudagraphs" are torch.compile's;
"jit-freeze" is torch.jit.trace + torch.jit.freeze (the UNet only); "channels-last" runs the eager
UNet on channels_last tensors. Prints one JSON line per measurement, then the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def cpu_times(fn, repeats: int) -> tuple[float, float]:
    """(CPU seconds of the first call, median CPU seconds of ``repeats`` calls after it)."""
    c = time.process_time()
    fn()
    first = time.process_time() - c
    runs = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        runs.append(time.process_time() - c)
    return first, statistics.median(runs)


def record(editor, subject):
    """The UNet's (args, kwargs) per row count and the first recogniser step's (guide, z), from real edits."""
    from mien.expression.targets import parse_request
    from mien.guidance.recogniser import RecogniserGuide

    unet, calls, steps = editor.pipeline.model.backbone.unet, {}, []
    forward, guide_call = unet.forward, RecogniserGuide.__call__

    def keep_unet(x, *a, **k):
        calls.setdefault(int(x.shape[0]), (x.clone(), a, k))
        return forward(x, *a, **k)

    def keep_guide(self, z, t, t_next):
        if self.scale > 0 and t <= self.until + 1e-9 and not steps:
            steps.append((self, z.clone()))
        return guide_call(self, z, t, t_next)

    unet.forward, RecogniserGuide.__call__ = keep_unet, keep_guide
    try:
        for label in ("happy", "sad"):
            editor.edit(subject, parse_request(label), n=1, seed=0)
    finally:
        del unet.forward
        RecogniserGuide.__call__ = guide_call
    return calls, steps[0]


def compiled(module_or_fn, mode: str):
    return torch.compile(module_or_fn, mode=None if mode == "default" else mode)


def bench_unet(unet, calls, mode: str, repeats: int, editor_params=()) -> None:
    for rows, (x, a, k) in sorted(calls.items()):
        with torch.inference_mode():
            eager_out = unet(x, *a, **k).sample
            e_first, eager = cpu_times(lambda: unet(x, *a, **k), repeats)
            if mode == "channels-last":
                fast = unet.to(memory_format=torch.channels_last)
                xx = x.contiguous(memory_format=torch.channels_last)
                c_first, comp = cpu_times(lambda: fast(xx, *a, **k), repeats)
                out = fast(xx, *a, **k).sample
                unet.to(memory_format=torch.contiguous_format)
            elif mode == "jit-freeze":
                c = time.process_time()
                tokens = k["encoder_hidden_states"]
                for p in editor_params:  # tracing bakes in weights as constants: none may ask for gradients
                    p.requires_grad_(False)
                traced = torch.jit.freeze(torch.jit.trace(_Sample(unet, k), (x, a[0], tokens), strict=False,
                                                          check_trace=False).eval())
                build = time.process_time() - c
                first, comp = cpu_times(lambda: traced(x, a[0], tokens), repeats)
                c_first = build + first
                out = traced(x, a[0], tokens)
            else:
                fast = compiled(unet, mode)
                c_first, comp = cpu_times(lambda: fast(x, *a, **k), repeats)
                out = fast(x, *a, **k).sample
        print(json.dumps({"part": "unet", "rows": rows, "mode": mode, "eager_s": round(eager, 4),
                          "compiled_s": round(comp, 4), "speedup": round(eager / comp, 2),
                          "first_call_s": round(c_first, 2), "eager_first_s": round(e_first, 3),
                          "max_abs_diff": float((out.float() - eager_out.float()).abs().max())}), flush=True)


class _Sample(torch.nn.Module):
    """The UNet's call as a module of plain tensors (what torch.jit.trace takes): (x, t, tokens) -> sample."""

    def __init__(self, unet, kwargs):
        super().__init__()
        self.unet = unet
        self.extra = {k: v for k, v in kwargs.items() if k != "encoder_hidden_states"}

    def forward(self, x, t, tokens):
        return self.unet(x, t, encoder_hidden_states=tokens, **self.extra).sample


def bench_critic(guide, z, mode: str, repeats: int) -> None:
    eager_score = guide.score
    for precision in ("float32", "bfloat16"):
        guide.score = eager_score
        eager_grad = guide.gradient(z, precision)
        _, eager = cpu_times(lambda: guide.gradient(z, precision), repeats)
        guide.score = compiled(eager_score, mode)
        c_first, comp = cpu_times(lambda: guide.gradient(z, precision), repeats)
        grad = guide.gradient(z, precision)
        cos = torch.nn.functional.cosine_similarity(grad.flatten(), eager_grad.flatten(), dim=0)
        print(json.dumps({"part": "critic", "precision": precision, "mode": mode, "eager_s": round(eager, 4),
                          "compiled_s": round(comp, 4), "speedup": round(eager / comp, 2),
                          "first_call_s": round(c_first, 2), "grad_cosine": round(float(cos), 6),
                          "max_abs_diff": float((grad - eager_grad).abs().max())}), flush=True)
    guide.score = eager_score


def images(editor, subject, label: str, repeats: int) -> tuple[list[float], list]:
    from mien.expression.targets import parse_request

    times, photos = [], []
    for seed in range(repeats + 1):  # the first image is a warm-up (and, compiled, the compile)
        c = time.process_time()
        result = editor.edit(subject, parse_request(label), n=1, seed=seed)
        times.append(time.process_time() - c)
        photos.append(result.photos[0].astype("int16"))
    return times, photos


def bench_e2e(editor, subject, labels, mode: str, repeats: int) -> None:
    pipe = editor.pipeline
    eager = {label: images(editor, subject, label, repeats) for label in labels}
    backbone, taef2, identity = pipe.model.backbone, pipe.taef2, pipe.identity
    unet, decode, embed = backbone.unet, taef2.decode, identity.mobilefacenet_unit
    backbone.unet = compiled(unet, mode)
    taef2.decode = compiled(decode, mode)
    identity.mobilefacenet_unit = compiled(embed, mode)
    try:
        for label in labels:
            times, photos = images(editor, subject, label, repeats)
            e_times, e_photos = eager[label]
            print(json.dumps({"part": "e2e", "label": label, "mode": mode,
                              "eager_s": round(statistics.median(e_times[1:]), 3),
                              "compiled_s": round(statistics.median(times[1:]), 3),
                              "eager_first_s": round(e_times[0], 2), "compiled_first_s": round(times[0], 2),
                              "max_abs_pixel_diff": [int(abs(p - q).max()) for p, q in zip(photos, e_photos)],
                              "mean_abs_pixel_diff": [round(float(abs(p - q).mean()), 3)
                                                      for p, q in zip(photos, e_photos)]}), flush=True)
    finally:
        backbone.unet = unet
        del taef2.decode, identity.mobilefacenet_unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["unet", "critic"], choices=["unet", "critic", "e2e"])
    ap.add_argument("--labels", nargs="+", default=["happy", "fearful"], help="e2e labels")
    ap.add_argument("--mode", default="default",
                    choices=["default", "max-autotune-no-cudagraphs", "jit-freeze", "channels-last"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from mien.threads import configure

    configure(args.threads)
    load_before = os.getloadavg()
    from mien.cli.analyze import example_path
    from mien.edit import Editor
    from mien.io.image import load_rgb

    editor = Editor.from_pretrained()
    subject = editor.prepare([load_rgb(example_path())])
    calls, (guide, z) = record(editor, subject)
    if "unet" in args.parts:
        bench_unet(editor.pipeline.model.backbone.unet, calls, args.mode, args.repeats,
                   list(editor.pipeline.model.parameters()))
    if "critic" in args.parts and args.mode in ("default", "max-autotune-no-cudagraphs"):
        bench_critic(guide, z, args.mode, args.repeats)
    if "e2e" in args.parts:
        bench_e2e(editor, subject, args.labels, args.mode, max(2, args.repeats // 3))
    editor.close()
    print(json.dumps({"threads": args.threads, "torch": torch.__version__,
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
