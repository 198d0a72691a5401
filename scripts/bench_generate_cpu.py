"""End-to-end CPU time of one generated image per label, with the models loaded, through the library
workflow (mien.edit.Editor), from the photo file to the PNGs on disk.

    python scripts/bench_generate_cpu.py [--labels happy sad ...] [--repeats 3] [--threads N]
        [any `mien generate` setting: --steps 25 --critic-precision float32|bfloat16 --recogniser-critic decoded|latent ...]

Per image: read the photo, prepare the subject (align, identity vector, reference latent; the Editor
keeps it after the first image, as for any photo asked for again: Editor.prepare), edit at
`mien generate`'s defaults for the label (GenerationSettings().resolve: contrast guidance for sad,
angry, fearful and disgusted, blendshape guidance for fearful), paste back, write the crop, pasted
photo and sheet (mien.io.output.save_result). Model loading is timed once, separately. The first
image is a warm-up and is dropped. Threads: mien's default (mien.threads) unless --threads. Prints
one JSON line per label (median, min, max seconds) and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mien.cli.settings_flags import add_setting_flags, settings_from_args
from mien.machine import cpu_kind

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--labels", "--expression", nargs="+", default=list(LABELS), help="labels to time (default: all 7)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: mien's (mien.threads)")
    add_setting_flags(ap, "generation: ")  # mien generate's own setting flags, defaults and help
    args = ap.parse_args()
    settings = settings_from_args(args)  # a bad setting is reported before the model loads
    from mien.threads import configure

    threads = configure(args.threads)  # before torch is imported
    import torch

    from mien.cli.analyze import example_path
    from mien.edit import Editor
    from mien.expression.targets import parse_request
    from mien.io.image import load_rgb
    from mien.io.output import save_result

    load_before = os.getloadavg()
    t = time.perf_counter()
    editor = Editor.from_pretrained(args.model)
    load_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.labels:
            times = []
            for i in range(args.repeats + 1):  # the first run warms up caches and is dropped
                t = time.perf_counter()
                subject = editor.prepare([load_rgb(example_path())])
                result = editor.edit(subject, parse_request(label), settings, n=1, seed=i)
                save_result(Path(tmp) / f"{label}{i}", result)
                if i:
                    times.append(time.perf_counter() - t)
            print(json.dumps({"label": label, "median_s": round(statistics.median(times), 3),
                              "min_s": round(min(times), 3), "max_s": round(max(times), 3), "repeats": args.repeats,
                              "settings": result.generation.settings.to_dict(), "threads": threads}), flush=True)
    editor.close()
    print(json.dumps({"model_load_s": round(load_s, 2), "threads": threads,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu": cpu_kind(),
                      "logical_cpus": os.cpu_count(), "torch": torch.__version__, "model_hash": editor.model_hash,
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
