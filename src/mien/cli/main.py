"""The `mien` command line: one module per subcommand, each with `register(subparsers)`.

Errors a user can cause are :class:`~mien.errors.MienError`: printed on one line, non-zero exit,
no traceback. Anything else is a bug: one line plus how to get the traceback (MIEN_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys

from mien import __version__
from mien.errors import MienError

DESCRIPTION = """\
mien: personalised facial expression generation.

From one or a few photos of a person, mien analyses the face (identity, expression,
blendshapes, head pose) and, with its built-in model, generates that person with the
expression you ask for.

start here:
  mien generate --identity me.jpg --expression happy --intensity 0.6
                                    you, smiling (built-in model)
  mien personalize me*.jpg --out me/  a personal LoRA from a few photos of you
  mien generate --person me/ --expression happy
  mien analyze photo.jpg            what mien sees in a face
  mien analyze photos/ --out report write annotated images and JSON for a folder
  mien weights                      which pretrained files are present
  mien expressions                  the expressions you can ask for (labels, 135 terms, AUs)
  mien train --help                 train the built-in model, its decoder, the expression space
  mien verify image.png             was this image made by mien (watermark, metadata)
"""


def build_parser() -> argparse.ArgumentParser:
    from mien.cli import (analyze, annotate, data, evaluate, expressions, generate, personalize,  # one module each
                          train, verify, weights)

    parser = argparse.ArgumentParser(
        prog="mien", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mien {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (generate, personalize, analyze, expressions, evaluate, annotate, data, train, weights, verify):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.run(args) or 0)
    except MienError as e:
        print(f"mien: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # e.g. `mien expressions --terms | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mien: interrupted; finished results were kept", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input
        if os.environ.get("MIEN_DEBUG"):
            raise
        print(f"mien: internal error: {type(e).__name__}: {e} (rerun with MIEN_DEBUG=1 for the traceback "
              "and report it)", file=sys.stderr)
        return 1
