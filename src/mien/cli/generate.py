"""`mien generate`: one or a few photos of a person + an expression → that person with that expression."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mien.cli.batch import Batch
from mien.cli.settings_flags import add_setting_flags, settings_from_args
from mien.errors import MienError

EPILOG = """\
how controls combine (docs/expressions.md): start from the --like photo's expression (else neutral),
add the --expression label/term scaled by --intensity, then set every --au exactly. With several
--identity photos their identity vectors are averaged; the first usable one is the photo that is
edited and the spatial reference, and its head pose is kept. They must show one person, checked as
`mien personalize` checks them (face-api distance): a photo of someone else is skipped and named, and
photos with no one person among them are refused.

swap (--into SCENE): the scene photo's face (--face N: another one, 0 is the largest) is replaced by the
--identity person, keeping the scene's head pose, lighting and everything outside the face, with the
requested expression; with no --expression/--au/--like, the scene face's own (a plain swap). docs/swap.md.

output: a new numbered folder per run, mien-out/001, mien-out/002, ... (or --out DIR, which must not
already hold an earlier run's images unless --overwrite), holding NNN_seedS.png (the aligned 128 px
face; request, seed and settings in its metadata), NNN_seedS_photo.png (the edit carried into the
edited photo at its own size, docs/fullres.md; .jpg/.webp with --photo-format; --no-paste skips it)
and sheet.png (the identity crop, the --like reference or --into scene if any, and every output, under
the request). Each image is written, and its path printed, as soon as it is made.

seeds: image i uses seed S+i. The default edit (FlowEdit) moves the photo by what the request changes,
and the seed only draws the noise the edit averages over, so images of one request differ in fine
detail only; --variety V (0 to 1) gives each seed its own expression target around the request
(its strength and the blendshapes it moves vary), so --n 4 --variety 0.7 shows four takes.

exit status: 0 done; 1 done, but some --identity photos were skipped (unreadable, no face or someone else;
each named); 2 bad input (one line saying what to fix, before any generation; photos of two people are
found once the face nets load); 3 a pretrained file is missing.

examples:
  mien generate --example --expression happy            the bundled London Set photo (CC BY 4.0)
  mien generate --identity me.jpg --expression happy --intensity 0.6
  mien generate --identity me.jpg --expression "happily surprised" --n 4
  mien generate --identity me.jpg --expression "happy 0.6" --n 4 --variety 0.7   four different smiles
  mien generate --identity me.jpg --au AU12=3,AU6=2
  mien generate --identity me.jpg me2.jpg --like reference_smile.jpg --out results/
  mien generate --identity me.jpg --expression elation --dry-run
  mien generate --identity me.jpg --into party.jpg --face 1 --expression happy
                                 me, smiling, in place of the second-largest face of party.jpg
  mien generate --identity me.jpg --expression angry --guidance-expression 2 --recogniser-guidance 0.3
                                 stronger expressions, identity held by the recogniser (check the images)
  mien generate --identity me.jpg --expression sad --blendshape-guidance 0.3
                                 the requested blendshapes followed more closely (slower)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a person with a chosen expression (built-in model)",
        description="Generate the person in --identity with the requested expression, using mien's built-in model "
        "(its card, src/mien/resources/model/README.md, says what it can and cannot do): each image as the aligned "
        "128 px face and as the edit carried into the photo at its own size.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--identity", nargs="+", metavar="PHOTO", help="one or more photos of the person")
    p.add_argument("--example", action="store_true", help="use the bundled example photo (London Set) as --identity")
    p.add_argument("--person", type=Path, metavar="PERSON_DIR",
                   help="a `mien personalize` folder: the model takes that person's LoRA (and, without --identity, "
                        "edits their first aligned photo)")
    p.add_argument("--expression", metavar="LABEL_OR_TERM",
                   help="a basic label, a vocabulary term, a compound ('happily surprised') or a recipe ('happy:0.6+AU6:2')")
    p.add_argument("--intensity", type=float, help="scales the --expression's labels, 0 to 1 (default 1; not --au "
                   "or --like)")
    p.add_argument("--au", metavar="AU=X,...", help="Action Unit intensities on the 0-5 scale, e.g. AU12=3,AU6=2")
    p.add_argument("--like", metavar="PHOTO", help="take the expression (not the identity) from this reference photo")
    p.add_argument("--into", metavar="SCENE_PHOTO",
                   help="swap: put the --identity person into this photo in place of its face (docs/swap.md)")
    p.add_argument("--face", type=int, default=None, metavar="N",
                   help="which face to edit, 0 (the default) the largest, 1 the next...: of the --into scene photo when "
                        "swapping, else of each --identity photo (mien analyze --all-faces lists them)")
    p.add_argument("--n", type=int, default=1, help="images to generate (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    add_setting_flags(p)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: a new numbered folder mien-out/001, mien-out/002, ... per run)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --out: replace the images and sheet an earlier run left there (without it, a folder "
                        "holding them is refused)")
    p.add_argument("--no-paste", dest="paste", action="store_false",
                   help="write only the aligned 128 px faces, not also each face put back into the first identity "
                        "photo (NNN_seedS_photo.png)")
    p.add_argument("--paste", dest="paste_with", choices=("detail", "crop"), default=None,
                   help="how the face goes back into the photo: 'detail' (the default for edits) moves the photo's own "
                        "pixels by the edit's motion at the photo's resolution (docs/fullres.md); 'crop' (the default "
                        "with --into) pastes the 128 px face itself")
    p.add_argument("--photo-format", choices=("png", "jpg", "webp"),
                   help="file type of NNN_seedS_photo (the edited photo at its own size; default png, lossless; "
                        "jpg and webp at quality 95)")
    p.add_argument("--model", default="default", help="a saved model folder (default: the built-in model)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda or mps where torch has them")
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, the output folder and that each photo is there (none is read, no "
                        "model loaded), print the resolved request, settings, threads and output folder; generate "
                        "nothing")
    p.set_defaults(run=run)


def build_request(args, like=None):
    """The ExpressionRequest of the arguments; ``like``: the --like photo's blendshapes, once measured."""
    from mien.expression.targets import like_label, parse_request

    request = parse_request(args.expression, 1.0 if args.intensity is None else args.intensity, args.au, like)
    if like is not None:  # named by the photo given, as the dry run names it
        request.like_label = like_label(args.like)
    return request


def paste_for(args) -> str:
    """--paste, else 'detail' for an edit and 'crop' for a swap: detail transfer keeps the photo's own pixels,
    which in a swap are the scene person's (docs/swap.md: the swap verified as the selfie's person 0.67 with
    the crop paste, 0.36 with detail transfer)."""
    return args.paste_with or ("crop" if args.into else "detail")


def check_combinations(args, settings) -> None:
    """Options that would do nothing together are refused, not dropped: --into takes no setting that would
    redraw the scene and an edit no swap reference; --intensity scales --expression only; --no-paste writes
    no photo for --paste or --photo-format; --face must be 0 or more."""
    from mien.pipeline import check_swap_settings

    if args.face is not None and args.face < 0:
        raise MienError(f"--face {args.face} must be 0 (the largest face) or more")
    check_swap_settings(settings, swap=bool(args.into))
    if args.intensity is not None and not args.expression:
        raise MienError(f"--intensity {args.intensity:g} scales --expression, which is missing; add --expression "
                        "LABEL_OR_TERM (--au values are set as given, a --like photo's expression as read)")
    for flag, value in (("--paste", args.paste_with), ("--photo-format", args.photo_format)):
        if not args.paste and value is not None:
            raise MienError(f"{flag} {value} sets the photo that --no-paste leaves out; drop one of the two")


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
    from mien.cli.checks import check_critic_weights, check_device, check_out_dir, critic_default
    from mien.errors import NoFaceError
    from mien.io.image import load_rgb
    from mien.io.output import check_overwrite, next_run_dir

    # Everything the arguments and files can show is checked before the first second of work (loading the
    # models, generating), so a mistake is a one-line error at once and never costs a finished image.
    if args.example:
        from mien.cli.analyze import example_path

        args.identity = [*(args.identity or []), str(example_path())]
    if args.person is not None:
        from mien.personalize.lora import read_card

        read_card(args.person)  # a missing or damaged folder is reported before anything loads
    if not args.identity and args.person is None:
        raise MienError("no identity photo; give --identity PHOTO [PHOTO...] (or --example to try the bundled photo, "
                        "or --person PERSON_DIR)")
    request = build_request(args)  # terms, AUs, intensities
    settings = settings_from_args(args)  # every setting checked before any photo is read or model loaded
    if args.person is None and (settings.person_rows, settings.person_scale) != ("both", 1.0):
        raise MienError("--person-rows and --person-scale set a person's LoRA; add --person PERSON_DIR")
    if args.n < 1:
        raise MienError(f"--n {args.n} must be at least 1 (the number of images)")
    if not -(2**63) <= args.seed <= 2**64 - args.n:  # the range torch's generator takes, for every image's seed
        raise MienError(f"--seed {args.seed} is out of range; use a whole number such as 0 (image i takes seed+i, "
                        f"each from -2**63 to 2**64-1)")
    check_combinations(args, settings)
    out = args.out if args.out is not None else next_run_dir()
    check_out_dir(out)
    check_overwrite(out, args.overwrite)
    check_device(args.device)
    check_model_dir(args.model)
    check_critic_weights(settings.recogniser_critic or critic_default(swap=bool(args.into)), settings.blendshape_critic)
    if not (args.expression or args.au or args.like or args.into):
        print("mien: note: no --expression, --au or --like given, so the request is neutral (the photo's face "
              "relaxed); ask for one with e.g. --expression happy (`mien expressions` lists them)", file=sys.stderr)
    if args.dry_run:
        return dry_run(args, request, settings, out)
    like_rgb = load_rgb(args.like) if args.like else None
    scene_rgb = load_rgb(args.into) if args.into else None
    batch, read = identity_photos(args.identity, load_rgb)
    names, photos = [path for path, _ in read], [rgb for _, rgb in read]

    from mien.edit import Editor, align_scene
    from mien.face.landmarker import FaceLandmarker
    from mien.pipeline import align_photo, align_photos

    # Faces first: a photo without one is reported before the models take seconds to load.
    landmarker = FaceLandmarker(num_faces=2)
    reference = None
    try:  # the editor takes the landmarker over; closing it here covers every exit
        if like_rgb is not None:
            try:
                reference, like_face = align_photo(landmarker, like_rgb)
            except NoFaceError as e:
                raise NoFaceError(f"--like {args.like}: {e}") from None
            request = build_request(args, like=like_face.blendshapes)
        if photos:
            # --face picks the identity photos' face unless it is the swap's scene face
            aligned = align_photos(landmarker, photos, names=names, face=0 if args.into else args.face or 0)
        else:  # --person alone: the person's own aligned photos
            from mien.personalize.inputs import stored_subject

            photos, aligned = stored_subject(args.person)
        for msg in aligned.skipped:
            name, _, reason = msg.partition(": ")
            batch.skip(name, reason)
        if args.into:
            scene_aligned = align_scene(landmarker, scene_rgb, args.face or 0, f"--into {args.into}")
        from mien.paste import PASTES

        editor = Editor.from_pretrained(args.model, device=args.device, landmarker=landmarker, person=args.person,
                                        paste=PASTES[paste_for(args)])
        if names:  # photos of someone else are skipped as personalize skips them, not averaged into the identity
            aligned = editor.pipeline.one_person(aligned, names, batch.skip)
        batch.done = len(aligned.crops)
        scene = editor.subject([scene_rgb], scene_aligned, args.face or 0) if args.into else None
        if scene is not None:
            request = editor.scene_request(request, scene)  # none asked for: the scene face's own expression
        subject = editor.subject(photos, aligned, 0 if args.into else args.face or 0)
        written = generate_and_save(editor, subject, request, settings, args, out, reference, scene)
    finally:
        landmarker.close()
    return batch.finish()


def dry_run(args, request, settings, out: Path) -> int:
    """--dry-run: every photo named is checked to be there (none is read: an identity photo missing among
    several is skipped as the run would skip it), then the resolved request, settings and output folder."""
    import numpy as np

    from mien.expression.targets import scene_request
    from mien.io.image import check_photo_path

    for path in (args.like, args.into):
        if path:
            check_photo_path(path)
    batch, _ = identity_photos(args.identity, check_photo_path)
    unread = np.zeros(52, np.float32)  # stands for the --like or scene face's blendshapes, which describe() names only
    if args.like:
        request = build_request(args, like=unread)
    elif args.into:
        request = scene_request(request, unread)
    described = request.describe()  # as the run's metadata and sheet say it
    into = {"into": args.into, "face": args.face or 0} if args.into else {}
    from mien.threads import native_bfloat16, rule  # critic guidance's default number format; the thread rule

    native = native_bfloat16(args.device)
    resolved = settings.resolve(request, swap=bool(args.into), native_bfloat16=native).to_dict()
    print(json.dumps({"identity": args.identity, **into, "request": described, "like": args.like, "n": args.n,
                      "seed": args.seed, **resolved, "model": args.model,
                      **({"person": str(args.person)} if args.person else {}),
                      "device": args.device, "threads": args.threads, "threads_rule": rule(), "out": str(out)}, indent=1))
    return batch.finish()


def identity_photos(paths: list[str] | None, read) -> tuple[Batch, list[tuple[str, object]]]:
    """The batch rule for --identity: ``read(path)`` of each photo; one that fails among several is skipped and
    named once, a single one (or all) is an error. Returns the batch and the (path, value) of each photo read."""
    batch, got = Batch("identity photos"), []
    for path in paths or []:
        try:
            got.append((path, read(path)))
            batch.ok()
        except MienError as e:
            if len(paths) == 1:
                raise
            batch.skip(path, e)
    if paths:
        batch.check_any()
    return batch, got


def generate_and_save(editor, subject, request, settings, args, out: Path, reference, scene=None) -> list[Path]:
    """Generate the images one at a time, each written and its path printed as soon as it is made (an
    interruption or a late failure keeps every finished image and the sheet of them, and has named them),
    under a progress bar once it takes over a second."""
    from tqdm import tqdm

    from mien.io.output import clear_earlier_outputs, save_numbered, save_sheet

    steps = settings.steps
    crops, metadata, written = [], [], []
    bar = tqdm(total=args.n * steps, desc="generating", unit="step", file=sys.stderr, delay=1.0, leave=False,
               bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]")
    try:
        for i in range(args.n):
            bar.set_description(f"image {i + 1}/{args.n}")
            result = editor.edit(subject, request, settings, n=1, seed=args.seed + i, paste=args.paste,
                                 callback=lambda step, total, info: bar.update(1), into=scene)  # fmt: skip
            if not crops and args.overwrite:
                clear_earlier_outputs(out)
            crops.append(result.crops[0])
            metadata.append(result.metadata[0])
            paths = save_numbered(out, i, result.crops[0], result.photos[0] if result.photos else None,
                                  result.metadata[0], photo_format=args.photo_format or "png")  # fmt: skip
            for p in paths:
                bar.write(str(p), file=sys.stdout)
            written += paths
    finally:
        bar.close()
        if crops:
            written.append(save_sheet(out, subject.identity.crops[0], crops, metadata, reference, args.like,
                                      scene=None if scene is None else scene.identity.crops[0]))
            print(written[-1], flush=True)
    return written
