"""`mien weights`: where each pretrained file is, whether it verifies, and how to get it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mien import weights as W
from mien.errors import MienError

EPILOG = """\
examples:
  mien weights                          each file: found where, checksum, licence, where it comes from
  mien weights --download               fetch the missing ones into the user cache
  mien weights --download --dest DIR    fetch into DIR (then set MIEN_WEIGHTS=DIR)

exit status: 0 every file present and verified; 3 some missing or corrupt (each named).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list the pretrained files mien needs; --download fetches missing ones",
        description=(
            "List every third-party pretrained file mien uses, where it was found and whether its "
            f"SHA256 matches. Files are searched in ${W.ENV_VAR}, then {W.cache_dir()}, then "
            "../shared/weights beside a source checkout. Each file's licence and origin are shown with it "
            "(docs/weights.md has the details)."
        ),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--download", action="store_true", help=f"fetch the files no searched folder holds from their original URLs into {W.cache_dir()}")
    p.add_argument("--dest", type=Path, help="with --download: folder to fetch into instead of the user cache (every file it lacks)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.dest is not None and not args.download:
        raise MienError(f"--dest {args.dest} is where --download fetches to; add --download")
    if args.download:
        from mien.cli.checks import check_out_dir

        check_out_dir(args.dest or W.cache_dir(), "--dest")  # before any fetch, not at the first file
        # into the cache only what no folder mien searches holds (--dest: whatever DIR lacks, to fill it)
        missing = None if args.dest else [r.name for r in W.status() if r.state != "ok"]
        if missing != []:
            W.download(missing, dest=args.dest, progress=lambda m: print(m, file=sys.stderr))
    rows = W.status()
    width = max(len(r.path) for r in rows)
    for r in rows:
        wf = W.FILES[r.name]
        where = r.found_at or f"get it from {wf.url}"
        print(f"{r.path:<{width}}  {r.state:<12}  {where}")
        print(f"{'':<{width}}  licence: {wf.license}; origin: {wf.url}")
    bad = [r for r in rows if r.state != "ok"]
    if bad:
        print(f"{len(bad)} file(s) not usable; set {W.ENV_VAR} to a folder holding them, or run `mien weights --download`",
              file=sys.stderr)
        return 3
    return 0
