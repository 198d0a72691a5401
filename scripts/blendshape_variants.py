"""Cheaper blendshape guidance for fearful: the variants of docs/performance.md ("Cheaper blendshape guidance").

    python scripts/blendshape_variants.py cosines [--people 14:20] [--reader R.safetensors ...]
                                                                              gradients on real guided states
    python scripts/blendshape_variants.py run VARIANT evaluate ARGS...        `mien evaluate` with VARIANT patched in
    python scripts/blendshape_variants.py run VARIANT profile ARGS...         scripts/profile_edit.py likewise

VARIANT is "default" or parts joined by "+":

  nets32    MediaPipe's mesh and blendshape nets in float32 (autocast off); the decode keeps the critic precision
  reuse     read the gradient on guided steps 1, 3, 5 and 7, and move along the last read on steps 2, 4 and 6
  first5    no move at flow time t < 0.1: the first 5 of the 7 guided steps (t = 0.28 ... 0.12)
  skip2     no read and no move at t = 0.24 and 0.16 (5 of the 7)
  skip2x2   as skip2, with the moves at t = 0.28 and 0.20 twice as long (they cover the skipped steps)
  oldprelu  the face mesh's PReLU spelled torch.where(x >= 0, x, x * alpha), as before its speed-up

``cosines`` edits dev-wild's people A:B (after the 14 tuning people by default) for fearful at the defaults with
``--recogniser-critic latent``, keeps every blendshape-guided step's state and prints one JSON line: the cosine
of each way's gradient (inside the face box) to the float32 one, of consecutive steps' gradients, and the CPU
seconds per read (median). ``--reader`` adds blendshape readers (:mod:`mien.models.latent_reader`, 52 outputs) as
ways: the gradient of the same closeness with the reader's blendshapes of the latent, no decode, in float32; each
also by flow time (``by_t``: the mean cosine at each guided step, the hybrid critic's early steps first).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time

import torch

PARTS = ("nets32", "reuse", "first5", "skip2", "skip2x2", "oldprelu")


def _near(t: float, *values: float) -> bool:
    return min(abs(t - v) for v in values) < 1e-4


def apply(variant: str) -> None:
    """Patch mien's blendshape guidance with ``variant`` (module docstring)."""
    parts = [] if variant == "default" else variant.split("+")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown variant part(s) {sorted(unknown)}: choose from {', '.join(PARTS)}")
    import mien.guidance.blendshape as B
    from mien.guidance.gradient import decoded

    if "oldprelu" in parts:
        import mien.models.tflite_ops as ops

        ops.OPS["PRELU"] = lambda args, opts: torch.where(args[0] >= 0, args[0], args[0] * args[1])
    if "nets32" in parts:
        def latent_blendshapes(model, taef2, blendshapes):
            def nets32(rgb):
                with torch.autocast(rgb.device.type, enabled=False):
                    return blendshapes(rgb.float())

            return decoded(model, taef2, nets32)

        B.latent_blendshapes = latent_blendshapes
    if "reuse" in parts:
        read = B.BlendshapeGuide.gradient

        def gradient(self, z, precision, score=None):
            k = self._reads = getattr(self, "_reads", 0) + 1
            if k % 2 == 0 and getattr(self, "_last", None) is not None:
                return self._last.clone()
            self._last = read(self, z, precision, score)
            return self._last.clone()

        B.BlendshapeGuide.gradient = gradient
    step = B.BlendshapeGuide.__call__

    def call(self, z, t, t_next):
        if ("first5" in parts and t < 0.1) or (({"skip2", "skip2x2"} & set(parts)) and _near(t, 0.24, 0.16)):
            return z
        if "skip2x2" in parts and _near(t, 0.28, 0.20):
            return step(self, z, t, t - 2 * (t - t_next))
        return step(self, z, t, t_next)

    B.BlendshapeGuide.__call__ = call


def cosines(people: str, readers=()) -> None:
    from mien.threads import configure

    configure(1)
    import torch.nn.functional as F

    from mien.edit import Editor
    from mien.evaluate.benchmark import dev_path, load
    from mien.expression.targets import parse_request
    from mien.guidance.blendshape import BlendshapeGuide
    from mien.guidance.gradient import decoded
    from mien.settings import GenerationSettings

    states, step = [], BlendshapeGuide.__call__

    def keep(self, z, t, t_next):
        if self.scale > 0 and t <= self.until + 1e-9:
            states.append((who, z.detach().clone(), self.target.detach().clone(), self.region.detach().clone(), t))
        return step(self, z, t, t_next)

    BlendshapeGuide.__call__ = keep
    editor = Editor.from_pretrained()
    bench = load(dev_path().with_name("dev-wild.yaml"))
    a, b = (int(v) for v in people.split(":"))
    for ident in bench.identities[a:b]:
        who = ident.id
        subject = editor.prepare([bench.image(ident.identity_photos[0])])
        editor.edit(subject, parse_request("fearful"), GenerationSettings(recogniser_critic="latent"), n=1, seed=0)
    BlendshapeGuide.__call__ = step
    pipe = editor.pipeline
    nets = pipe.blendshape_net

    def nets32(rgb):
        with torch.autocast(rgb.device.type, enabled=False):
            return nets(rgb.float())

    import mien.models.tflite_ops as ops

    slope = ops.OPS["PRELU"]
    where = lambda args, opts: torch.where(args[0] >= 0, args[0], args[0] * args[1])  # noqa: E731
    ways = {"float32": ("float32", nets, slope), "bfloat16 (default)": ("bfloat16", nets, slope),
            "bfloat16, nets in float32": ("bfloat16", nets32, slope),
            "bfloat16, PReLU as before": ("bfloat16", nets, where)}
    grads, seconds = {}, {}
    for name, (precision, read, prelu) in ways.items():
        ops.OPS["PRELU"] = prelu
        grads[name], seconds[name] = [], []
        for _, z, target, region, _ in states:
            guide = BlendshapeGuide(decoded(pipe.model, pipe.taef2, read), target, region, 1.0, 0.3, precision)
            c = time.process_time()
            g = guide.gradient(z, precision)
            seconds[name].append(time.process_time() - c)
            grads[name].append((g * region).flatten())
    ops.OPS["PRELU"] = slope
    from mien.guidance.blendshape import reader_blendshapes
    from mien.models.latent_reader import LatentReader

    for path in readers:
        name = f"reader {path}"
        ways[name] = None
        measure = reader_blendshapes(LatentReader.from_weights(path))
        grads[name], seconds[name] = [], []
        for _, z, target, region, _ in states:
            guide = BlendshapeGuide(measure, target, region, 1.0, 0.3, "float32")
            c = time.process_time()
            g = guide.gradient(z, "float32")
            seconds[name].append(time.process_time() - c)
            grads[name].append((g * region).flatten())

    def summary(pairs):
        v = sorted(c for c in (F.cosine_similarity(x, y, 0).item() for x, y in pairs) if c == c)  # NaN: not finite
        return {"mean": round(sum(v) / len(v), 3), "p10": round(v[len(v) // 10], 3), "n": len(v)}

    same = [i for i in range(len(states) - 1) if states[i][0] == states[i + 1][0]]
    out = {"people": people, "states": len(states)}
    for name in ways:
        out[name] = {"cos_to_float32": summary(zip(grads[name], grads["float32"])),
                     "cos_next_step": summary((grads[name][i], grads[name][i + 1]) for i in same),
                     "cpu_s_per_read": round(sorted(seconds[name])[len(states) // 2], 4)}
        by_t: dict = {}
        for (_, _, _, _, t), x, y in zip(states, grads[name], grads["float32"]):
            by_t.setdefault(round(t, 3), []).append(F.cosine_similarity(x, y, 0).item())
        out[name]["by_t"] = {t: round(sum(v) / len(v), 3) for t, v in sorted(by_t.items(), reverse=True)}
    print(json.dumps(out, separators=(",", ":")))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        if len(sys.argv) < 4 or sys.argv[3] not in ("evaluate", "profile"):
            raise SystemExit("usage: blendshape_variants.py run VARIANT evaluate|profile ARGS...")
        variant, what, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
        apply(variant)
        if what == "evaluate":
            from mien.cli.main import main as mien

            raise SystemExit(mien(["evaluate", *rest]))
        sys.argv = ["scripts/profile_edit.py", *rest]
        runpy.run_path("scripts/profile_edit.py", run_name="__main__")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["cosines"])
    ap.add_argument("--people", default="14:20", help="dev-wild identities A:B (default 14:20)")
    ap.add_argument("--reader", nargs="*", default=[], help="blendshape readers' .safetensors to compare too")
    args = ap.parse_args()
    cosines(args.people, args.reader)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
