"""Where the CPU time of one generated image goes, per component, at `mien generate`'s defaults.

    python scripts/profile_edit.py [--labels happy fearful ...] [--repeats 3] [--threads N]
        [any `mien generate` setting: --steps 25 --critic-precision float32|bfloat16 --recogniser-critic decoded|latent ...]

The same work as scripts/bench_generate_cpu.py (read the photo, prepare the subject, edit, paste back,
write the PNGs and sheet), with each component wrapped in a timer that reads this process's CPU time
(time.process_time: the time its threads ran, which other work on the machine does not inflate as it
does wall-clock time) and its wall-clock time. Components nest (the UNet calls inside recogniser
guidance are counted under it); each row gives the time spent in the component itself, without the
components inside it ("self"), per image, averaged over the repeats after a dropped warm-up image. The
UNet rows also give the number of calls per image and their batch sizes.

Prints one JSON line per label: {"label", "threads", "components": {path: {"cpu_s", "wall_s", "calls"}},
"unet_batches": {rows: calls}, "total_cpu_s", "total_wall_s"}, then one with the load average.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from mien.cli.settings_flags import add_setting_flags, settings_from_args

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


class Timers:
    """Nested timers: ``wrap(owner, attr, name)`` replaces ``owner.attr`` by a timed call; self-times per path."""

    def __init__(self):
        self.stack: list[list] = []  # [path, cpu child time, wall child time]
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.batches: Counter = Counter()

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()
        self.calls.clear()
        self.batches.clear()

    def timed(self, name: str, fn, batch_of=None):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            path = (self.stack[-1][0] + "/" if self.stack else "") + name
            if batch_of is not None:
                self.batches[batch_of(*args, **kwargs)] += 1
            self.stack.append([path, 0.0, 0.0])
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dc, dw = time.process_time() - c0, time.perf_counter() - w0
                _, child_c, child_w = self.stack.pop()
                self.cpu[path] += dc - child_c
                self.wall[path] += dw - child_w
                self.calls[path] += 1
                if self.stack:
                    self.stack[-1][1] += dc
                    self.stack[-1][2] += dw

        return call

    def wrap(self, owner, attr: str, name: str, batch_of=None) -> None:
        setattr(owner, attr, self.timed(name, getattr(owner, attr), batch_of))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", "--expression", nargs="+", default=list(LABELS), help="labels (default: all 7)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: mien's (mien.threads)")
    add_setting_flags(ap, "generation: ")  # mien generate's own setting flags, defaults and help
    args = ap.parse_args()
    settings = settings_from_args(args)  # a bad setting is reported before the model loads
    from mien.threads import configure

    threads = configure(args.threads)
    load_before = os.getloadavg()
    c0, w0 = time.process_time(), time.perf_counter()
    import torch

    import mien.io.output as output
    import mien.io.provenance as provenance
    from mien.cli.analyze import example_path
    from mien.edit import Editor
    from mien.expression.targets import parse_request
    from mien.guidance.blendshape import BlendshapeGuide
    from mien.guidance.recogniser import RecogniserGuide
    from mien.io.image import load_rgb

    import_cpu, import_wall = time.process_time() - c0, time.perf_counter() - w0
    c0, w0 = time.process_time(), time.perf_counter()
    editor = Editor.from_pretrained()
    load_cpu, load_wall = time.process_time() - c0, time.perf_counter() - w0

    T = Timers()
    pipe = editor.pipeline
    unet = pipe.model.backbone.unet
    unet.forward = T.timed("unet", unet.forward, batch_of=lambda x, *a, **k: int(x.shape[0]))
    pipe.taef2.decode = T.timed("taef2.decode", pipe.taef2.decode)
    pipe.taef2.encode = T.timed("taef2.encode", pipe.taef2.encode)
    pipe.identity.condition = T.timed("faceapi.condition", pipe.identity.condition)
    pipe.identity.mobilefacenet_unit = T.timed("mobilefacenet", pipe.identity.mobilefacenet_unit)
    pipe.blendshape_net.forward = T.timed("blendshape_net", pipe.blendshape_net.forward)
    pipe.landmarker.detect = T.timed("mediapipe.detect", pipe.landmarker.detect)
    T.wrap(RecogniserGuide, "__call__", "recogniser_guidance")
    T.wrap(BlendshapeGuide, "__call__", "blendshape_guidance")
    T.wrap(editor, "prepare", "prepare")
    T.wrap(type(pipe), "__call__", "pipeline")
    editor.paste = T.timed("paste_detail", editor.paste)
    T.wrap(provenance, "save_image", "png_write")
    T.wrap(output, "grid", "sheet_draw")
    save_result = T.timed("save_result", output.save_result)
    read = T.timed("load_rgb", load_rgb)
    edit = T.timed("edit", editor.edit)

    with tempfile.TemporaryDirectory() as tmp:
        for label in args.labels:
            totals = [0.0, 0.0]
            for i in range(args.repeats + 1):
                if i == 1:
                    T.reset()
                    totals = [0.0, 0.0]
                c, w = time.process_time(), time.perf_counter()
                subject = editor.prepare([read(example_path())])
                result = edit(subject, parse_request(label), settings, n=1, seed=i)
                save_result(Path(tmp) / f"{label}{i}", result)
                totals[0] += time.process_time() - c
                totals[1] += time.perf_counter() - w
            r = args.repeats
            comps = {p: {"cpu_s": round(T.cpu[p] / r, 4), "wall_s": round(T.wall[p] / r, 4), "calls": T.calls[p] / r}
                     for p in sorted(T.cpu, key=lambda p: -T.cpu[p])}  # fmt: skip
            print(json.dumps({"label": label, "threads": threads, "steps": result.generation.settings.steps,
                              "total_cpu_s": round(totals[0] / r, 3), "total_wall_s": round(totals[1] / r, 3),
                              "components": comps,
                              "unet_batches": {str(b): n / r for b, n in sorted(T.batches.items())}}), flush=True)
    editor.close()
    print(json.dumps({"import_cpu_s": round(import_cpu, 2), "import_wall_s": round(import_wall, 2),
                      "model_load_cpu_s": round(load_cpu, 2), "model_load_wall_s": round(load_wall, 2),
                      "threads": threads, "torch": torch.__version__,
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
