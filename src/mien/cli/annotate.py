"""`mien annotate`: label every crop of the faces128 pool automatically (Parquet sidecar)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  mien annotate --limit 100 --out /tmp/ann          a quick look at 100 crops
  mien annotate                                     the whole pool (resumes where an earlier run stopped)
  mien annotate --only landmarks --split dev        one column group of one split
  mien data pack                                    then pack the labelled pool for training

exit status: 0 every crop analysed or found face-less (each a row with ok = false, counted at the end);
  2 bad options or no face data found.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "annotate",
        help="label the face pool: blendshapes, pose, AU estimates, expression, identity embeddings",
        description="Run mien's face analysis over the faces128 pool and write one Parquet sidecar keyed by "
        "sample key (annotations.parquet) plus annotations.json (versions, weight checksums). Interrupt it "
        "at any time: re-running continues where it stopped. The shards are never modified. Action Units "
        "are estimates computed from blendshapes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/annotations"), help="output folder (default: runs/annotations)")
    p.add_argument("--data", type=Path, help="faces128 folder (default: $MIEN_DATA or ../shared/data/faces128)")
    p.add_argument("--split", nargs="+", default=["train", "dev"], choices=["train", "dev"], help="splits to annotate")
    p.add_argument("--limit", type=int, help="stop after this many images in total (for a quick look)")
    p.add_argument("--only", nargs="+", choices=["landmarks", "faceapi", "mobilefacenet"],
                   default=["landmarks", "faceapi", "mobilefacenet"],
                   help="column groups to compute (default: all); each group resumes on its own")
    p.add_argument("--device", default="cpu", help="torch device for the face-api / MobileFaceNet groups")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mien.cli.checks import check_device, check_out_dir

    check_device(args.device)
    check_out_dir(args.out)
    from mien.data.annotate import annotate, load_annotations

    path = annotate(args.out, data_dir=args.data, split=tuple(args.split), groups=tuple(args.only), limit=args.limit,
                    workers=args.workers, device=args.device)
    a = load_annotations(path)
    print(f"{path}: {len(a['key'])} rows, {int(a['ok'].sum())} analysed, {int((~a['ok']).sum())} without a face")
    return 0
