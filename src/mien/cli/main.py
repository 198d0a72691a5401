"""The `mien` command line: one module per subcommand, each with `register(subparsers)`.

Errors a user can cause are :class:`~mien.errors.MienError`: printed on one line, non-zero exit,
no traceback. Anything else is a bug: one line plus how to get the traceback (MIEN_DEBUG=1).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

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
  mien ui                           the web UI in your browser (http://127.0.0.1:7860)

every command: --threads N sets the CPU threads (default: every physical core while nothing else
runs, one core left free otherwise, looked at before each generation; here {busy}-{cores});
COMMAND --help shows its examples.

exit status (every command): 0 done; 1 done, but some items (photos, files) were skipped, each
named in one message; 2 bad input or nothing usable; 3 a pretrained file is missing or corrupt;
70 an internal error (a bug); 130 interrupted (finished results are kept).
"""

EXIT_SKIPPED = 1  # batch rule: some items skipped, the rest done (mien.cli.batch)
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: distinct from every input error


def build_parser() -> argparse.ArgumentParser:
    from mien.cli import (analyze, annotate, data, evaluate, expressions, generate, personalize,  # one module each
                          train, ui, verify, weights)

    from mien.threads import default_threads, physical_cores

    parser = Parser(prog="mien", description=DESCRIPTION.format(busy=default_threads(), cores=physical_cores()),
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # subcommands take its class
    parser.add_argument("--version", action="version", version=f"mien {__version__}")
    add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (generate, personalize, analyze, expressions, evaluate, annotate, data, train, weights, verify, ui):
        module.register(sub)
    for command in _all_subparsers(sub):  # `mien --threads 1 generate` and `mien generate --threads 1` alike
        add_global_flags(command)
    return parser


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (not the usage, ~20 lines for `mien generate`): what was wrong, the
    closest option or command when one was misspelt, and where the help is."""

    def error(self, message: str):
        close = self.closest(message)
        hint = f"did you mean {close}? See" if close else "see"
        self.exit(2, f"{self.prog}: error: {message}; {hint} `{self.prog} --help`\n")

    def closest(self, message: str) -> str | None:
        """The known option or choice nearest to the one ``message`` says is wrong, if any is near."""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            wrong, known = choice[1], re.findall(r"'([^']*)'", choice[2])
        else:
            wrong = next((w.split("=")[0] for w in message.partition("unrecognized arguments: ")[2].split()
                          if w.startswith("-")), "")  # fmt: skip
            known = [s for a in self._actions for s in a.option_strings]
        close = difflib.get_close_matches(wrong, known, n=1) if wrong else []
        return close[0] if close else None


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="CPU threads for the models (default: every physical core while no other process has "
                             "work running, else one core left free, looked at before each generation; or "
                             "$OMP_NUM_THREADS; 1 is fastest on a busy machine)")


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` chose: ``mien train decoder``'s for `mien train decoder ...`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None):
            return command_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def _all_subparsers(sub: argparse._SubParsersAction):
    for p in dict.fromkeys(sub.choices.values()):  # aliases map to the same parser
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from _all_subparsers(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the (sub)command they were given to, which knows its own options
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return report_user_errors("mien", lambda: _run(args))
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
        return EXIT_INTERNAL


def _run(args: argparse.Namespace) -> int | None:
    from mien.threads import configure

    args.threads = configure(getattr(args, "threads", None))  # before any command imports torch
    return args.run(args)


def report_user_errors(prog: str, run: Callable[[], int | None]) -> int:
    """``run()``'s exit status, with a :class:`MienError` (bad input) printed as the one line ``PROG: error: MESSAGE``
    and its exit code, never a traceback. One place for the rule, shared by `mien` and the scripts (run_script), so
    a script's bad setting reads exactly like the CLI's."""
    try:
        return int(run() or 0)
    except MienError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code


# what run_script says of a path error raised with neither a filename nor a message
_PATH_ERRORS = ((FileNotFoundError, errno.ENOENT), (IsADirectoryError, errno.EISDIR),
                (NotADirectoryError, errno.ENOTDIR))


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main()`` (scripts/*.py) and exit with its status, bad input reported as `mien` reports it:
    one line naming the script, exit 2 (or the error's own code), no traceback. A missing input file counts as bad
    input here (a script reads the paths it is given directly, where `mien`'s commands check theirs first), named by
    the error's filename, or by its message where it has none; MIEN_DEBUG=1 shows its traceback. Other errors keep
    theirs: a bug in a measurement script is for its author."""
    prog = Path(sys.argv[0]).name

    def paths_checked() -> int | None:
        try:
            return main()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            if os.environ.get("MIEN_DEBUG"):
                raise
            if e.filename is not None:
                raise MienError(f"{e.filename}: {(e.strerror or 'not found').lower()}; check the path") from None
            # raised without a filename (some libraries give only a message): the message is all there is to name
            what = (e.strerror or str(e)).rstrip(". ")
            what = what or next(os.strerror(n) for kind, n in _PATH_ERRORS if isinstance(e, kind))
            raise MienError(f"{what}; check the path") from None

    raise SystemExit(report_user_errors(prog, paths_checked))
