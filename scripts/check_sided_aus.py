"""Does the built-in model draw one side? Sided AU requests on the bundled example, read back by MediaPipe.

    python scripts/check_sided_aus.py [--aus AU12 AU43] [--seeds 0 1] [--level 5] [--steps 25]

For each AU, asks for its left side and its right side at ``--level`` (nothing else), generates through
mien.edit.Editor, and prints MediaPipe's reading of the side's blendshapes on the result (the pasted
photo): left minus right should be positive for L requests and negative for R requests if the model
follows the side. Prints one JSON line per request and seed.
"""

import argparse
import json

import numpy as np

from mien.cli.analyze import example_path
from mien.edit import Editor
from mien.expression.aus import control_blendshapes, index_of
from mien.expression.targets import parse_request
from mien.io.image import load_rgb
from mien.settings import GenerationSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aus", nargs="+", default=["AU12", "AU43"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--level", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    editor = Editor.from_pretrained()
    photo = load_rgb(example_path())
    subject = editor.prepare([photo])
    before = editor.detect(photo)[0].blendshapes
    for au in args.aus:
        left, right = control_blendshapes(au + "L"), control_blendshapes(au + "R")
        lr = lambda bs: float(np.mean([bs[index_of(b)] for b in left]) - np.mean([bs[index_of(b)] for b in right]))  # noqa: E731
        print(json.dumps({"au": au, "photo_left_minus_right": round(lr(before), 3)}))
        for side in ("L", "R"):
            for seed in args.seeds:
                req = parse_request(au=f"{au}{side}={args.level:g}")
                res = editor.edit(subject, req, GenerationSettings(steps=args.steps), n=1, seed=seed)
                bs = editor.detect(res.photos[0])[0].blendshapes
                print(json.dumps({"request": req.describe(), "seed": seed, "left_minus_right": round(lr(bs), 3),
                                  "left": round(float(np.mean([bs[index_of(b)] for b in left])), 3),
                                  "right": round(float(np.mean([bs[index_of(b)] for b in right])), 3)}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
