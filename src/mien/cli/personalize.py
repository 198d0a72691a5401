"""`mien personalize`: a few photos of one person -> a person folder with their LoRA (mien.personalize)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mien.cli.batch import EXIT_SKIPPED
from mien.errors import MienError

EPILOG = """\
The photos (1 to ~20, several photos of one person, any expressions) are aligned and checked to show one
person (face-api distance); a photo of someone else, an unreadable file or a photo without a face is
named and left out (the run goes on; exit status 1). Training writes OUT/adapter_config.json +
OUT/adapter_model.safetensors (a peft LoRA on the backbone's attention, or on the --lora-targets set),
OUT/inputs.safetensors (the aligned photos) and OUT/card.json (photos used as SHA256, base model hash,
steps, time). Ctrl-C or a kill leaves a checkpoint: the same command resumes it. --time-budget stops in
time with a usable adapter; running again continues.

examples:
  mien personalize me1.jpg me2.jpg me3.jpg --out me/
  mien personalize me*.jpg --out me/ --time-budget 120
  mien generate --person me/ --expression happy --n 4           the person's aligned photo, edited
  mien generate --person me/ --identity new.jpg --expression sad
"""


def register(sub: argparse._SubParsersAction) -> None:
    from mien.builtin.config import LORA_TARGET_SETS
    from mien.personalize.config import PersonalizeConfig

    d = PersonalizeConfig()
    p = sub.add_parser("personalize", help="fine-tune a personal LoRA on a few photos of one person",
                       description="Personalise the built-in model on photos of one person (a LoRA through peft, "
                       "with prior preservation and the expression-crafting loss; docs/personalize.md).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of the person")
    p.add_argument("--out", type=Path, required=True, metavar="PERSON_DIR", help="the person folder to write")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    p.add_argument("--lora-targets", default="attention", metavar="SET",
                   help=f"the UNet modules the LoRA wraps: {', '.join(LORA_TARGET_SETS)} (default attention: the "
                        "attention projections; +conv adds the ResNet blocks' convolutions, +time their time-embedding "
                        "projections, +input the first convolution, where the reference photo's latent enters; "
                        "docs/personalize.md, \"LoRA targets beyond attention\")")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="stop within S seconds (from the start of the command) with a usable adapter")
    p.add_argument("--model", default="default", help="the base model folder (default: the built-in model)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mien.personalize.config import PersonalizeConfig, lora_targets

    config = dataclasses.replace(PersonalizeConfig(), steps=args.steps, rank=args.rank, alpha=float(args.rank),
                                 targets=lora_targets(args.lora_targets))  # fmt: skip
    if args.time_budget is not None and args.time_budget <= 0:
        raise MienError(f"--time-budget {args.time_budget} must be a positive number of seconds")
    from mien.cli.checks import check_device, check_out_dir

    check_out_dir(args.out)
    if args.device is not None:
        check_device(args.device)
    if str(args.model) != "default":
        from mien.cli.generate import check_model_dir

        check_model_dir(args.model)
    from mien.personalize.run import personalize

    left_out = []

    def warn(msg: str) -> None:  # each names a photo left out: unreadable, no face, or another person
        left_out.append(msg)
        print(f"mien: {msg}", file=sys.stderr)

    result = personalize(args.photos, args.out, config, args.model, args.device, args.time_budget,
                         progress=not args.quiet, warn=warn)  # fmt: skip
    state = "done" if result.finished else f"stopped at step {result.steps_done}/{config.steps}"
    print(f"{result.directory}: {state}, {result.time_s:.0f} s training, adapter {result.adapter_bytes / 1e6:.2f} MB")
    if not left_out:
        return 0
    print(f"mien: {len(left_out)} of {len(args.photos)} photos left out (named above); the other "
          f"{len(args.photos) - len(left_out)} used", file=sys.stderr)
    return EXIT_SKIPPED  # the batch rule (mien.cli.batch)
