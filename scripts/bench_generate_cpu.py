"""End-to-end CPU time of one generated image, from the photo file to the PNG on disk.

    python scripts/bench_generate_cpu.py [--model DIR] [--expression happy] [--blendshape-guidance G] [--steps 25] [--repeats 5] [--threads 2]

Times, with the models already loaded (what an interactive session or the Gradio UI pays per
image): read and align the photo, identity vector and reference latent, expression target,
25 steps of mien generate's default edit (its settings are printed with the result), TAEF2
decoding, PNG writing. Model loading is timed separately, once. Prints one JSON line; the median
is the figure. The work depends on the label: sad, angry, fearful and disgusted take contrast
guidance by default (one more UNet row per step), so ``--expression angry`` is slow; fearful, with blendshape guidance too, is the slowest default.
``--expression fearful`` also takes blendshape guidance by default (``--blendshape-guidance 0`` times it without).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--expression", default="happy", help="basic label to ask for (default happy)")
    ap.add_argument("--blendshape-guidance", type=float, default=None, help="blendshape guidance (default: per label, 1 on fearful)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mien.cli.analyze import example_path
    from mien.expression.targets import ExpressionRequest
    from mien.io.image import load_rgb
    from mien.io.output import save_generation
    from mien.pipeline import MienPipeline

    t = time.perf_counter()
    pipe = MienPipeline.from_pretrained(args.model)
    load_s = time.perf_counter() - t
    times = []
    with tempfile.TemporaryDirectory() as out, torch.inference_mode():
        for i in range(args.repeats + 1):  # the first run warms up caches and is dropped
            t = time.perf_counter()
            ident = pipe.prepare_identity([load_rgb(example_path())])
            gen = pipe(ident, ExpressionRequest(mix={args.expression: 1.0}), n=1, seed=i, steps=args.steps,
                       blendshape_guidance=args.blendshape_guidance)
            save_generation(Path(out) / str(i), ident, gen)
            if i:
                times.append(time.perf_counter() - t)
    pipe.close()
    print(json.dumps({"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                      "max_s": round(max(times), 3), "repeats": args.repeats, "steps": args.steps, "expression": args.expression,
                      "threads": args.threads, "model_load_s": round(load_s, 2), "cpu": platform.processor() or platform.machine(),
                      "torch": torch.__version__, "model_hash": pipe.model_hash, "settings": gen.settings}))


if __name__ == "__main__":
    main()
