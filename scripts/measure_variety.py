"""How different the images of one request are across seeds, with and without --variety.

    python scripts/measure_variety.py [--expression happy] [--n 4] [--steps 25] [--varieties 0 0.7 1]

Generates --n images of the bundled example photo per variety (seeds 0..n-1, `mien generate`'s defaults
otherwise) and prints, per variety, the mean absolute pixel difference (0-255) between every pair of
seeds' 128 px crops: the spread a user sees on the contact sheet.
"""

import argparse
import itertools
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expression", default="happy")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--varieties", type=float, nargs="+", default=[0.0, 0.7, 1.0])
    args = ap.parse_args()
    from mien.threads import configure

    configure()
    from mien.cli.analyze import example_path
    from mien.edit import Editor
    from mien.expression.targets import parse_request
    from mien.io.image import load_rgb
    from mien.settings import GenerationSettings

    with Editor.from_pretrained() as editor:
        subject = editor.prepare([load_rgb(example_path())])
        for v in args.varieties:
            crops = editor.edit(subject, parse_request(args.expression), GenerationSettings(steps=args.steps, variety=v),
                                n=args.n, seed=0, paste=False).crops
            diffs = [float(np.abs(a.astype(float) - b.astype(float)).mean()) for a, b in itertools.combinations(crops, 2)]
            print(json.dumps({"variety": v, "expression": args.expression, "n": args.n, "steps": args.steps,
                              "mean_pair_diff": round(float(np.mean(diffs)), 2), "max_pair_diff": round(max(diffs), 2)}))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
