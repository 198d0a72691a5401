"""`mien generate`: one or a few photos of a person + an expression → that person with that expression."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mien.errors import MienError

EPILOG = """\
how controls combine (docs/expressions.md): start from the --like photo's expression (else neutral),
add the --expression label/term scaled by --intensity, then set every --au exactly; the head pose
comes from the identity photo(s). Several --identity photos are averaged into one identity.

examples:
  mien generate --identity me.jpg --expression happy --intensity 0.6
  mien generate --identity me.jpg --expression "happily surprised" --n 4
  mien generate --identity me.jpg --au AU12=3,AU6=2
  mien generate --identity me.jpg me2.jpg --like reference_smile.jpg --out results/
  mien generate --identity me.jpg --expression elation --dry-run
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a person with a chosen expression (built-in model)",
        description="Generate new 128 px images of the person in --identity with the requested expression, using "
        "mien's built-in model (docs/model-card.md says what it can and cannot do).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--identity", nargs="+", required=True, metavar="PHOTO", help="one or more photos of the person")
    p.add_argument("--expression", metavar="LABEL_OR_TERM",
                   help="a basic label, a vocabulary term, a compound ('happily surprised') or a recipe ('happy:0.6+AU6:2')")
    p.add_argument("--intensity", type=float, default=1.0, help="scales the --expression mix, 0 to 1 (default 1)")
    p.add_argument("--au", metavar="AU=X,...", help="Action Unit intensities on the 0-5 scale, e.g. AU12=3,AU6=2")
    p.add_argument("--like", metavar="PHOTO", help="take the expression (not the identity) from this reference photo")
    p.add_argument("--n", type=int, default=1, help="images to generate (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--sampler", default="euler", help="euler, heun, midpoint or dpmpp_2m (default euler)")
    p.add_argument("--guidance-identity", type=float, default=2.0, help="identity guidance scale (0 turns the stream off)")
    p.add_argument("--guidance-expression", type=float, default=3.0, help="expression guidance scale (0 turns it off)")
    p.add_argument("--out", type=Path, default=Path("mien-out"), help="output folder (default mien-out)")
    p.add_argument("--model", default="default", help="a saved model folder (default: the built-in model)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved request and settings, generate nothing")
    p.set_defaults(run=run)


def build_request(args, pipe=None):
    from mien.expression.aus import parse_au_spec
    from mien.expression.targets import ExpressionRequest
    from mien.expression.vocabulary import Vocabulary

    if not 0.0 <= args.intensity <= 1.0:
        raise MienError(f"--intensity {args.intensity} is out of range; use a number from 0 to 1")
    mix, aus = {}, {}
    if args.expression:
        recipe = Vocabulary.load().resolve(args.expression)
        mix, aus = dict(recipe.basic), dict(recipe.aus)
    if args.au:
        aus.update(parse_au_spec(args.au))
    like = None
    if args.like and pipe is not None:
        from mien.io.image import load_rgb

        like = pipe.reference_blendshapes(load_rgb(args.like))
    return ExpressionRequest(mix=mix, aus=aus, like=like, intensity=args.intensity)


def run(args: argparse.Namespace) -> int:
    from mien.io.image import load_rgb

    if args.n < 1 or args.steps < 1:
        raise MienError("--n and --steps must be at least 1")
    request = build_request(args)  # validates terms and AUs before any model loads
    if args.dry_run:
        print(json.dumps({"identity": args.identity, "request": request.describe(), "like": args.like,
                          "n": args.n, "seed": args.seed, "steps": args.steps, "sampler": args.sampler,
                          "guidance_identity": args.guidance_identity,
                          "guidance_expression": args.guidance_expression, "model": args.model}, indent=1))
        return 0
    photos = [load_rgb(p) for p in args.identity]
    from mien.pipeline import MienPipeline

    pipe = MienPipeline.from_pretrained(args.model, device=args.device)
    try:
        request = build_request(args, pipe)
        ident = pipe.prepare_identity(photos, names=args.identity)
        for msg in ident.skipped:
            print(f"mien: warning: skipped {msg}", file=sys.stderr)
        gen = pipe(ident, request, n=args.n, seed=args.seed, steps=args.steps, sampler=args.sampler,
                   guidance_identity=args.guidance_identity, guidance_expression=args.guidance_expression)
    finally:
        pipe.close()
    from mien.io.output import save_generation

    paths = save_generation(args.out, ident, gen)
    for p in paths:
        print(p)
    return 0
