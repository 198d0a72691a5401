"""Command-line flags derived from :class:`mien.settings.GenerationSettings`: one flag per field, its help the
field's help, so `mien generate`, `mien evaluate` and `--dry-run` never restate a setting."""

from __future__ import annotations

import argparse
import dataclasses

from mien.settings import GenerationSettings

_TYPES = {"int": int, "float": float, "str": str}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """One option per settings field (``--guidance-until`` for ``guidance_until``). Options left out are
    absent from the parsed namespace (argparse.SUPPRESS), so the dataclass's defaults stay the only ones."""
    for f in dataclasses.fields(GenerationSettings):
        kind = _TYPES[str(f.type).replace(" | None", "")]
        help = prefix + f.metadata["help"]
        if f.default is not None:
            help += f" (default {f.default:g})" if isinstance(f.default, float) else f" (default {f.default})"
        parser.add_argument(flag(f.name), type=kind, default=argparse.SUPPRESS, metavar=f.metadata.get("metavar"),
                            help=help)  # fmt: skip


def given_settings(args: argparse.Namespace) -> dict:
    """The settings given on the command line, by field name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationSettings) if hasattr(args, f.name)}


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    """The validated settings of the command line (a one-line MienError naming the flag when one is bad)."""
    return GenerationSettings(**given_settings(args))
