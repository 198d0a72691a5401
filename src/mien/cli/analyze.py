"""`mien analyze`: what mien sees in each face of each photo."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from mien.errors import MienError
from mien.io.image import IMAGE_SUFFIXES, expand_inputs, load_rgb

EXAMPLE = "london_001_neutral.jpg"  # Face Research Lab London Set, CC BY 4.0 (assets/examples/ATTRIBUTION.md)

EPILOG = """\
output (--json): {"photos": [{"path": ..., "faces": [{"box": [x0,y0,x1,y1],
  "identity": {"faceapi": [128 floats], "mobilefacenet": [192 floats]},
  "expression": {"neutral": p, ... 7 labels}, "blendshapes": {name: score, ... 52},
  "pose": {"yaw": deg, "pitch": deg, "roll": deg}}], "warnings": [...]}]}
  A photo that failed has "error": "..." instead of "faces".

exit status: 0 every photo analysed; 1 some skipped (each named in one message, a summary at the end);
  2 none could be analysed.

  identity.faceapi is the dlib-convention 128-D descriptor (same person when the L2 distance
  is below 0.6); identity.mobilefacenet is L2-normalised (compare with cosine).
  Expression labels come from the face-api.js classifier; blendshapes and pose from MediaPipe.

examples:
  mien analyze --example                 the bundled London Set photo
  mien analyze me.jpg --json > me.json
  mien analyze photos/ --out analysed/   annotated PNG + JSON per photo

--out DIR follows mien generate's rule: it refuses a DIR holding an earlier analysis (its JSON files and
their PNGs) unless --overwrite, which deletes them once the first photo is analysed, so a rerun never
leaves <name>-2 copies beside the old files. Photos of one run with the same name get <name>-2, <name>-3.
DIR must not hold the photos it analyses nor lie inside a folder it searches (refused before any work).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="detect faces and measure identity, expression, blendshapes and head pose",
        description="Find the face in each photo (the largest, unless --all-faces) and report its box, "
        "identity embeddings (two models), expression probabilities, 52 MediaPipe blendshapes and head pose.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("photos", nargs="*", metavar="PHOTO_OR_DIR", help="image files, or folders searched for images")
    p.add_argument("--example", action="store_true", help="analyse the bundled example photo (London Set, CC BY 4.0)")
    p.add_argument("--json", action="store_true", help="print one JSON document to stdout instead of a summary")
    p.add_argument("--out", type=Path, metavar="DIR", help="write <name>.png (annotated) and <name>.json per photo here "
                   "(refused if an earlier analysis is there, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace an earlier analysis in DIR (its "
                   "files are deleted once the first photo is analysed)")
    p.add_argument("--all-faces", action="store_true", help="analyse every face, not only the largest")
    p.add_argument("--device", default="cpu", help="torch device for the identity/expression nets (default: cpu)")
    p.set_defaults(run=run)


def example_path() -> Path:
    return Path(str(resources.files("mien") / "assets" / "examples" / EXAMPLE))


def run(args: argparse.Namespace) -> int:
    from mien.cli.batch import Batch
    from mien.cli.checks import check_device, check_out_dir

    paths = expand_inputs(args.photos) + ([example_path()] if args.example else [])
    if not paths and args.photos:  # only folders, none holding an image
        raise MienError(f"no image files in {', '.join(args.photos)}; mien reads "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))} (folders are searched, subfolders too)")
    if not paths:
        raise MienError("no photos given; name image files or folders (or use --example to try the bundled photo)")
    if args.out:
        check_out_dir(args.out)
        check_not_an_input_folder(args.out, args.photos, paths)
        check_earlier_analysis(args.out, args.overwrite)
    elif args.overwrite:
        raise MienError("--overwrite replaces an earlier analysis in --out DIR; add --out DIR or drop --overwrite")
    check_device(args.device)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    from mien.analysis import FaceAnalyzer  # heavy imports only once there is work

    results = []
    written: set[str] = set()  # the names this run has written, so two photos named alike do not overwrite each other
    with FaceAnalyzer(device=args.device) as analyzer:
        bar = tqdm(paths, desc="analysing", unit="photo", file=sys.stderr, disable=len(paths) < 5 or None)
        batch = Batch("photos", write=lambda msg: bar.write(msg, file=sys.stderr))
        for path in bar:
            entry = _analyze_one(analyzer, path, args, written)
            results.append(entry)
            if "error" in entry:
                batch.skip(path, entry["error"])
                continue
            batch.ok()
            for w in entry["warnings"]:
                bar.write(f"mien: warning: {path}: {w}", file=sys.stderr)
            if not args.json:
                _print_summary(entry)

    if args.json:
        json.dump({"photos": results}, sys.stdout)
        sys.stdout.write("\n")
    return batch.finish()


def _analyze_one(analyzer, path: Path, args, written: set[str]) -> dict:
    try:
        rgb = load_rgb(path)
        faces = analyzer.analyze(rgb, all_faces=args.all_faces)
    except MienError as e:
        return {"path": str(path), "error": _strip_path(str(e), path)}
    entry = {"path": str(path), "faces": [f.to_json() for f in faces], "warnings": faces[0].warnings}
    if args.out:
        from mien.face.draw import annotate

        if args.overwrite and not written:
            for old in earlier_analysis(args.out):
                old.unlink()
        stem = _unique_stem(written, path)
        annotate(rgb, faces).save(args.out / f"{stem}.png")
        (args.out / f"{stem}.json").write_text(json.dumps(entry, indent=1))
    return entry


def _strip_path(msg: str, path: Path) -> str:
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _unique_stem(taken: set[str], path: Path) -> str:
    """``path``'s name, or ``name-2``, ``name-3``... when an earlier photo of this run had it; added to ``taken``."""
    stem, i = path.stem, 1
    while stem in taken:
        i += 1
        stem = f"{path.stem}-{i}"
    taken.add(stem)
    return stem


def earlier_analysis(out: Path) -> list[Path]:
    """The files an earlier ``mien analyze --out`` wrote in ``out``: each JSON of one photo's analysis (its "path"
    and "faces") and the PNG of the same name; nothing else."""
    found = []
    for p in sorted(Path(out).glob("*.json")) if Path(out).is_dir() else []:
        try:
            entry = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(entry, dict) and {"path", "faces"} <= entry.keys():
            found += [p] + [q for q in [p.with_suffix(".png")] if q.is_file()]
    return found


def check_not_an_input_folder(out: Path, named: list[str], paths: list[Path]) -> None:
    """Refuse (one line) an ``out`` that holds a photo of this run or lies in a folder the run searches: the
    annotated PNGs would replace photos of the same name, and a rerun would read them back as photos."""
    where = Path(out).resolve()
    for p in paths:
        if p.resolve().parent == where:
            raise MienError(f"--out {out} holds the photo {p.name} this run reads; its annotated PNG would replace "
                            "photos there; choose another folder for --out")
    for n in named:
        d = Path(n).resolve()
        if d.is_dir() and where.is_relative_to(d):
            raise MienError(f"--out {out} lies in {n}, a folder this run searches for photos; a rerun would read "
                            "the annotated PNGs as photos; choose a folder outside it")


def check_earlier_analysis(out: Path, overwrite: bool) -> None:
    """Refuse (one line) to write into a folder holding an earlier analysis unless ``overwrite``: the rule of
    ``mien generate --out`` (:func:`mien.io.output.check_overwrite`)."""
    old = earlier_analysis(out)
    if old and not overwrite:
        raise MienError(f"--out {out} already holds {len(old)} file(s) of an earlier analysis ({old[0].name}, ...); "
                        "add --overwrite to replace them, or choose another folder")


def _print_summary(entry: dict) -> None:
    if "error" in entry:
        return
    for i, f in enumerate(entry["faces"]):
        top_expr = max(f["expression"], key=f["expression"].get)
        top_bs = sorted(f["blendshapes"].items(), key=lambda kv: -kv[1])[:3]
        pose = f["pose"]
        print(
            f"{entry['path']} face {i}: box {[round(v) for v in f['box']]}  "
            f"expression {top_expr} {f['expression'][top_expr]:.2f}  "
            f"blendshapes {', '.join(f'{k} {v:.2f}' for k, v in top_bs)}  "
            f"pose yaw {pose['yaw']:+.1f} pitch {pose['pitch']:+.1f} roll {pose['roll']:+.1f}"
        )
