"""`mien data pack`: the training view in chunks sized for one GPU job each."""

from __future__ import annotations

import argparse
from pathlib import Path

DATA_EPILOG = """\
examples:
  mien data pack                                   pack the train split labelled by `mien annotate`
  mien data pack --help                            what a pack holds and its options
"""

PACK_EPILOG = """\
examples:
  mien annotate --limit 200 && mien data pack --out /tmp/pack      a small pack to look at
  mien data pack --annotations runs/annotations/annotations.parquet --max-mb 24
  mien train --pack .carry/pack --out runs/builtin                 then train on it (mien train --help)
  mien data pack --max-mb 10.6 --first tw                          every Taiwanese performer in chunk-00
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare the face pool for training (pack)",
                       description="Data preparation for training the built-in model on a GPU machine.",
                       epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    pk = dsub.add_parser(
        "pack",
        help="write the training view as self-contained chunks that each fit one GPU job",
        description="Join the faces128 train split with its annotations (mien annotate) into chunks of at most "
        "--max-mb MB: original WebP bytes + identity and expression vectors + mask geometry, cut along people "
        "so identity references stay inside a chunk. Writes pack.json and SHA256SUMS beside them.",
        epilog=PACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pk.add_argument("--annotations", type=Path, default=Path("runs/annotations/annotations.parquet"), metavar="FILE",
                    help="the labels `mien annotate` wrote (default runs/annotations/annotations.parquet)")
    pk.add_argument("--out", type=Path, default=Path(".carry/pack"),
                    help="output folder (default .carry/pack: a folder git ignores, which the GPU job scripts upload "
                         "with the code)")
    pk.add_argument("--data", type=Path, help="faces128 folder (default: $MIEN_DATA or ../shared/data/faces128)")
    pk.add_argument("--max-mb", type=float, default=24.0, help="chunk size limit in MB (default 24: two fit one 64 MB GPU job upload)")
    pk.add_argument("--first", action="append", default=[], metavar="SOURCE",
                    help="put this source's people (a key prefix: tw, cfp, lag, celeba; repeatable) into the first "
                         "chunks, ahead of the others, e.g. the posed pairs that `mien train --source-weight` "
                         "weights up, when a run carries chunk-00 only")
    pk.set_defaults(run=run_pack)
    p.set_defaults(run=lambda a: p.print_help() or 2)


def run_pack(args: argparse.Namespace) -> int:
    import json

    from mien.data.pack import pack
    from mien.errors import MienError

    if not args.annotations.is_file():
        raise MienError(f"{args.annotations} not found; run `mien annotate` first (or pass --annotations)")
    meta = json.loads(pack(args.annotations, args.out, data_dir=args.data, max_mb=args.max_mb,
                           first=tuple(args.first)).read_text())
    for c in meta["chunks"]:
        print(f"{args.out / c['file']}: {c['images']} images, {c['people']} people, {c['bytes'] / 1e6:.1f} MB")
    print(f"{meta['images']} images in {len(meta['chunks'])} chunks ({meta['self_ref']} with no other photo of the person)")
    return 0
