"""`mien generate`: one or a few photos of a person + an expression → that person with that expression."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mien.errors import MienError
from mien.settings import (EDIT_METHODS, GENERATION_DEFAULTS, KEEP_REGIONS, blendshape_guidance_for, check_edit,
                           contrast_for, recogniser_guidance_for)

EPILOG = """\
how controls combine (docs/expressions.md): start from the --like photo's expression (else neutral),
add the --expression label/term scaled by --intensity, then set every --au exactly. With several
--identity photos their identity vectors are averaged; the first usable one is the photo that is
edited and the spatial reference, and its head pose is kept.

output: OUT/NNN_seedS.png (the aligned 128 px face; request, seed and settings in its metadata),
OUT/NNN_seedS_photo.png (that face put back into the edited photo; --no-paste skips it) and
OUT/sheet.png (the identity crop beside every output).

examples:
  mien generate --example --expression happy            the bundled London Set photo (CC BY 4.0)
  mien generate --identity me.jpg --expression happy --intensity 0.6
  mien generate --identity me.jpg --expression "happily surprised" --n 4
  mien generate --identity me.jpg --au AU12=3,AU6=2
  mien generate --identity me.jpg me2.jpg --like reference_smile.jpg --out results/
  mien generate --identity me.jpg --expression elation --dry-run
  mien generate --identity me.jpg --expression angry --guidance-expression 2 --recogniser-guidance 0.3
                                 stronger expressions, identity held by the recogniser (check the images)
  mien generate --identity me.jpg --expression sad --blendshape-guidance 0.3
                                 the requested blendshapes followed more closely (slower)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a person with a chosen expression (built-in model)",
        description="Generate new 128 px images of the person in --identity with the requested expression, using "
        "mien's built-in model (its card, src/mien/resources/model/README.md, says what it can and cannot do).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--identity", nargs="+", metavar="PHOTO", help="one or more photos of the person")
    p.add_argument("--example", action="store_true", help="use the bundled example photo (London Set) as --identity")
    p.add_argument("--expression", metavar="LABEL_OR_TERM",
                   help="a basic label, a vocabulary term, a compound ('happily surprised') or a recipe ('happy:0.6+AU6:2')")
    p.add_argument("--intensity", type=float, default=1.0, help="scales the --expression mix, 0 to 1 (default 1)")
    p.add_argument("--au", metavar="AU=X,...", help="Action Unit intensities on the 0-5 scale, e.g. AU12=3,AU6=2")
    p.add_argument("--like", metavar="PHOTO", help="take the expression (not the identity) from this reference photo")
    p.add_argument("--n", type=int, default=1, help="images to generate (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    d = GENERATION_DEFAULTS
    p.add_argument("--steps", type=int, default=d["steps"], help=f"sampler steps (default {d['steps']})")
    p.add_argument("--sampler", default=d["sampler"],
                   help=f"euler, heun, midpoint or dpmpp_2m, for --method sdedit (default {d['sampler']}; flowedit steps with Euler)")
    p.add_argument("--guidance-identity", type=float, default=d["guidance_identity"],
                   help=f"identity guidance scale (default {d['guidance_identity']:g}; higher keeps more of the identity photo)")
    p.add_argument("--guidance-expression", type=float, default=d["guidance_expression"],
                   help=f"expression guidance scale (default {d['guidance_expression']:g}; higher pushes the requested expression harder)")
    p.add_argument("--guidance-contrast", type=float, default=None, metavar="W",
                   help="flowedit: push the requested expression away from the photo's own by W (1 is off); default per "
                        "label: 1.5 for sad, angry, fearful and disgusted, which the model under-draws, 1 otherwise")
    p.add_argument("--guidance-until", type=float, default=d["guidance_until"], metavar="T",
                   help=f"guide only while the flow time is above T (it runs from --strength down to 0), then follow the "
                        f"plain conditional prediction: strong guidance late in sampling distorts fine detail (default "
                        f"{d['guidance_until']:g}; 0 guides at every step)")
    p.add_argument("--recogniser-guidance", type=float, default=None, metavar="G",
                   help=f"flowedit: late in the edit, step the face toward the identity photos' MobileFaceNet embedding "
                        f"with this strength; keeps who they are, larger also undoes the expression (default "
                        f"{d['recogniser_guidance']:g}, {d['recogniser_guidance_contrast']:g} on requests with contrast guidance; "
                        f"0 turns it off)")
    p.add_argument("--recogniser-guidance-until", type=float, default=d["recogniser_guidance_until"], metavar="T",
                   help=f"recogniser guidance acts while the flow time is at most T (default "
                        f"{d['recogniser_guidance_until']:g}; 1 acts at every step)")
    p.add_argument("--blendshape-guidance", type=float, default=None, metavar="G",
                   help="flowedit: late in the edit, step the face toward the requested blendshapes as MediaPipe reads "
                        "them (stronger, more exact expressions; slower) with this strength; default per label: 1 for "
                        "fearful, which the model draws as a grimace otherwise, 0 (off) for the rest")
    p.add_argument("--blendshape-guidance-until", type=float, default=d["blendshape_guidance_until"], metavar="T",
                   help=f"blendshape guidance acts while the flow time is at most T (default "
                        f"{d['blendshape_guidance_until']:g}; 1 acts at every step)")
    p.add_argument("--method", default=d["method"], metavar="|".join(EDIT_METHODS),
                   help=f"how the identity photo is edited: 'flowedit' moves it by the difference between the requested "
                        f"expression and its own, 'sdedit' re-noises it and redraws (default {d['method']})")
    p.add_argument("--strength", type=float, default=d["strength"],
                   help=f"how early in the noise schedule the edit starts: 1 is the whole schedule (with sdedit: drawn from "
                        f"noise), lower keeps more of the identity photo (default {d['strength']:g})")
    p.add_argument("--keep", default=d["keep"], metavar="|".join(KEEP_REGIONS),
                   help=f"'background' keeps the identity photo outside the face (hair, clothes, background); 'none' redraws "
                        f"everything (default {d['keep']})")
    p.add_argument("--out", type=Path, default=Path("mien-out"), help="output folder (default mien-out)")
    p.add_argument("--no-paste", dest="paste", action="store_false",
                   help="write only the aligned 128 px faces, not also each face put back into the first identity "
                        "photo (NNN_seedS_photo.png)")
    p.add_argument("--model", default="default", help="a saved model folder (default: the built-in model)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved request and settings, generate nothing")
    p.set_defaults(run=run)


def build_request(args, like=None):
    """The ExpressionRequest of the arguments; ``like``: the --like photo's blendshapes, once measured."""
    from mien.expression.aus import parse_au_spec
    from mien.expression.targets import ExpressionRequest
    from mien.expression.vocabulary import Vocabulary

    if not 0.0 <= args.intensity <= 1.0:  # also rejects nan
        raise MienError(f"--intensity {args.intensity} is out of range; use a number from 0 to 1")
    mix, aus = {}, {}
    if args.expression:
        recipe = Vocabulary.load().resolve(args.expression)
        mix, aus = dict(recipe.basic), dict(recipe.aus)
    if args.au:
        aus.update(parse_au_spec(args.au))
    return ExpressionRequest(mix=mix, aus=aus, like=like, intensity=args.intensity)


def check_settings(args, request) -> None:
    """Settings errors that need no model: found here, before the slow model loading. Resolves the
    request's contrast and recogniser guidance (defaults depend on its labels)."""
    check_edit(args.strength, args.keep, args.method, args.guidance_until, args.recogniser_guidance,
               args.recogniser_guidance_until, args.guidance_contrast, args.blendshape_guidance,
               args.blendshape_guidance_until)
    args.guidance_contrast = contrast_for(args.method, args.guidance_contrast, request.mix)
    args.recogniser_guidance = recogniser_guidance_for(args.method, args.recogniser_guidance, args.guidance_contrast)
    args.blendshape_guidance = blendshape_guidance_for(args.method, args.blendshape_guidance, request.mix)
    from mien.sampling.samplers import SAMPLERS

    if args.sampler not in SAMPLERS:
        raise MienError(f"unknown sampler '{args.sampler}'; choose one of {', '.join(sorted(SAMPLERS))}")
    check_model_dir(args.model)


def check_model_dir(model: str) -> None:
    """A --model folder must hold a readable config.json and a complete model.safetensors.

    Opens only the safetensors header (safetensors checks that the tensors it declares cover the file
    exactly), so a truncated or foreign file is a one-line error here instead of a failure deep in loading.
    """
    from mien.pipeline import DEFAULT_MODEL, default_model_dir

    is_default = str(model) == DEFAULT_MODEL
    d = default_model_dir() if is_default else Path(model)
    fix = ("reinstall mien" if is_default
           else "pass --model with a folder saved by mien training, or leave --model out for the built-in model")
    if not d.is_dir():
        raise MienError(f"--model {model}: no such folder; {fix}")
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise MienError(f"model file {d / name} is missing; {fix}")
    try:
        json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise MienError(f"model file {d / 'config.json'} is not valid JSON ({e}); {fix}") from None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(d / "model.safetensors"), framework="np") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise MienError(f"model file {d / 'model.safetensors'} is truncated or corrupt ({e}); {fix}") from None


def run(args: argparse.Namespace) -> int:
    from mien.errors import NoFaceError
    from mien.io.image import load_rgb

    # Every error the arguments alone can show is raised before the (slow) model loading.
    if args.example:
        from mien.cli.analyze import example_path

        args.identity = [*(args.identity or []), str(example_path())]
    if not args.identity:
        raise MienError("no identity photo; give --identity PHOTO [PHOTO...] (or --example to try the bundled photo)")
    request = build_request(args)  # terms, AUs, intensities
    if args.n < 1 or args.steps < 1:
        raise MienError("--n and --steps must be at least 1")
    if not args.dry_run:  # a dry run reads no photos
        photos = [load_rgb(p) for p in args.identity]
        like_rgb = load_rgb(args.like) if args.like else None
    check_settings(args, request)  # sampler, model folder, the request's guidance
    if args.method == "flowedit" and args.sampler != GENERATION_DEFAULTS["sampler"]:
        print(f"mien: warning: --sampler {args.sampler} applies to --method sdedit; flowedit steps with Euler",
              file=sys.stderr)
    if args.dry_run:
        print(json.dumps({"identity": args.identity, "request": request.describe(), "like": args.like,
                          "n": args.n, "seed": args.seed, "steps": args.steps, "sampler": args.sampler,
                          "guidance_identity": args.guidance_identity,
                          "guidance_expression": args.guidance_expression, "strength": args.strength,
                          "keep": args.keep, "method": args.method,
                          "guidance_until": args.guidance_until, "recogniser_guidance": args.recogniser_guidance,
                          "recogniser_guidance_until": args.recogniser_guidance_until,
                          "guidance_contrast": args.guidance_contrast,
                          "blendshape_guidance": args.blendshape_guidance,
                          "blendshape_guidance_until": args.blendshape_guidance_until, "model": args.model}, indent=1))
        return 0
    from mien.face.landmarker import FaceLandmarker
    from mien.pipeline import MienPipeline, align_photos, reference_blendshapes

    # Faces first: a photo without one is reported before the models take seconds to load.
    landmarker = FaceLandmarker(num_faces=2)
    try:  # the pipeline takes the landmarker over; closing it here covers every exit
        if like_rgb is not None:
            try:
                request = build_request(args, like=reference_blendshapes(landmarker, like_rgb))
            except NoFaceError as e:
                raise NoFaceError(f"--like {args.like}: {e}") from None
        aligned = align_photos(landmarker, photos, names=args.identity)
        for msg in aligned.skipped:
            print(f"mien: warning: skipped {msg}", file=sys.stderr)
        pipe = MienPipeline.from_pretrained(args.model, device=args.device, landmarker=landmarker)
        ident = pipe.identity_input(aligned)
        gen = pipe(ident, request, n=args.n, seed=args.seed, steps=args.steps, sampler=args.sampler,
                   guidance_identity=args.guidance_identity, guidance_expression=args.guidance_expression,
                   strength=args.strength, keep=args.keep, method=args.method,
                   guidance_until=args.guidance_until, recogniser_guidance=args.recogniser_guidance,
                   recogniser_guidance_until=args.recogniser_guidance_until, guidance_contrast=args.guidance_contrast,
                   blendshape_guidance=args.blendshape_guidance, blendshape_guidance_until=args.blendshape_guidance_until)
    finally:
        landmarker.close()
    from mien.io.output import save_generation

    pasted = None
    if args.paste:
        from mien.pipeline import paste_into_photo

        photo, matrix = photos[aligned.sources[0]], aligned.matrices[0]
        pasted = [paste_into_photo(photo, img, matrix, args.keep) for img in gen.images]
    paths = save_generation(args.out, ident, gen, pasted)
    for p in paths:
        print(p)
    return 0
