"""`mien verify IMAGE...`: was this image made by mien? The watermark in its pixels, and its metadata."""

from __future__ import annotations

import argparse
import json
import sys

from mien.errors import MienError

EPILOG = """\
each image gets one line:
  PATH: marked by mien (watermark score S[, metadata: mien VERSION, model HASH, request R, seed N])
  PATH: not marked (watermark score S; no mien metadata)
  PATH: metadata says mien but no watermark found (score S) ...   the pixels were changed heavily
  PATH: error: WHY                                                  the file could not be read
then a summary line on stderr. --json prints one JSON object per image instead.

The watermark survives JPEG re-compression, resizing and cropping, so it still answers after a
platform has stripped the metadata; its false-positive rate on unmarked photos is in docs/provenance.md.
A missing mark does not prove an image is real: other tools do not mark their images.

exit status: 0 every image is marked, 1 at least one image is not marked (or only its metadata says
mien), 2 at least one image could not be read (bad arguments too).

examples:
  mien verify mien-out/001/000_seed0_photo.png
  mien verify downloads/*.jpg --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check whether images were made by mien (watermark and metadata)",
        description="Look for mien's invisible watermark in each image and read the metadata mien writes "
        "(docs/provenance.md).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images or folders of images")
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of text")
    p.set_defaults(run=run)


def _describe(rec: dict) -> str:
    parts = [f"mien {rec.get('version', '?')}"]
    if rec.get("model_hash"):
        parts.append(f"model {rec['model_hash']}")
    if rec.get("request"):
        parts.append(f"request {rec['request']}")
    if "seed" in rec:
        parts.append(f"seed {rec['seed']}")
    return ", ".join(parts)


def verdict(path, prov) -> tuple[str, str]:
    """(status, line) for one image: status ``marked``, ``metadata_only`` or ``unmarked``."""
    wm, rec = prov.watermark, prov.record
    meta = f"metadata: {_describe(rec)}" if rec else "no mien metadata"
    if wm.found:
        return "marked", f"{path}: marked by mien (watermark score {wm.score:.1f}; {meta})"
    if rec:
        return "metadata_only", (f"{path}: metadata says mien but no watermark found (score {wm.score:.1f}; {meta}); "
                                 "the pixels were changed heavily or the metadata was copied")
    return "unmarked", f"{path}: not marked (watermark score {wm.score:.1f}; no mien metadata)"


def run(args: argparse.Namespace) -> int:
    from mien.io.image import expand_inputs
    from mien.io.provenance import read_provenance

    paths = expand_inputs(args.images)
    if not paths:
        raise MienError("no images found in " + " ".join(args.images) + "; give image files or folders")
    counts = {"marked": 0, "metadata_only": 0, "unmarked": 0, "error": 0}
    for path in paths:
        try:
            prov = read_provenance(path)
        except MienError as e:  # one bad file is reported and the batch goes on
            why = str(e).removeprefix(f"{path}: ")  # the line names the file once
            status, line, obj = "error", f"{path}: error: {why}", {"path": str(path), "status": "error", "error": why}
        else:
            status, line = verdict(path, prov)
            obj = {"path": str(path), "status": status, "watermark_score": prov.watermark.score,
                   "watermark_scale": prov.watermark.scale, "metadata": prov.record}  # fmt: skip
        counts[status] += 1
        print(json.dumps(obj) if args.json else line, flush=True)
    print(f"mien verify: {len(paths)} images: {counts['marked']} marked, {counts['unmarked']} not marked, "
          f"{counts['metadata_only']} metadata only, {counts['error']} unreadable", file=sys.stderr)
    if counts["error"]:
        return 2
    return 1 if counts["unmarked"] or counts["metadata_only"] else 0
