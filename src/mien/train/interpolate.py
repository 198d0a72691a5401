"""Weight interpolation between a model and its fine-tune: ``base + alpha (tuned - base)``.

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022) interpolates a model's
weights with those of its fine-tune and finds points on the line that keep most of what the fine-tune
gained while losing less of what the base could do; model soups (Wortsman et al., ICML 2022) average
fine-tunes of one start the same way. Here the base is the shipped model and the fine-tune a consistency
feedback run started from it (``mien train --init-from``): the fine-tune reaches the labels without
per-label pushes but moves the person (docs/training.md), and points between the two trade one against
the other without another GPU run. Both models must share the config (same architecture and decoder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mien.builtin.config import to_dict
from mien.builtin.model import CONFIG_NAME, MienModel, joined_state, split_state, verify_checksum, write_checksum
from mien.checksums import sha256_of
from mien.errors import MienError

RECORD_NAME = "interpolation.json"  # what the folder was made from, beside the weights


def interpolate(base: str | Path, tuned: str | Path, alpha: float, out: str | Path,
                only: tuple[str, ...] = ()) -> dict:
    """Write ``out`` as a model folder whose weights are ``base + alpha (tuned - base)`` (fp16, as every
    saved model), with base's config and decoder; returns the record written to ``out/interpolation.json``.
    ``only``: move just the weights whose saved names start with one of these prefixes (``unet``, ``streams``,
    ``stream_kv``: the backbone, the condition streams, their keys and values), the rest stays base's."""
    if not 0.0 <= alpha <= 1.0:
        raise MienError(f"--alpha must lie in [0, 1] (0: the base model, 1: the fine-tune), got {alpha:g}")
    base, tuned, out = Path(base), Path(tuned), Path(out)
    if out.resolve() in (base.resolve(), tuned.resolve()):
        raise MienError(f"--out {out} is one of the two models: write the interpolated model to a new folder")
    hashes = {"base": verify_checksum(base), "tuned": verify_checksum(tuned)}
    a, b = MienModel.from_pretrained(base), MienModel.from_pretrained(tuned)
    if to_dict(a.config) != to_dict(b.config):
        raise MienError(f"{tuned} is not a fine-tune of {base}: their configs differ (interpolate only a model "
                        "and a run started from it with --init-from --config-from-init)")  # fmt: skip
    decoder = a.config.decoder
    if decoder and sha256_of(base / decoder) != sha256_of(tuned / decoder):
        raise MienError(f"{base.name} and {tuned.name} have different decoders ({decoder}); interpolate models "
                        "that share one")  # fmt: skip
    base_state, tuned_state = joined_state(a.state_dict()), joined_state(b.state_dict())
    moved = [k for k in base_state if base_state[k].is_floating_point() and (not only or k.startswith(only))]
    if not moved:
        raise MienError(f"--only {','.join(only)}: no weight name starts with it (prefixes: unet, streams, stream_kv)")
    with torch.no_grad():
        for k in moved:
            base_state[k] = base_state[k] + alpha * (tuned_state[k] - base_state[k])
    a.load_state_dict(split_state(base_state))
    out.mkdir(parents=True, exist_ok=True)
    a.save_pretrained(out, dtype=torch.float16)
    shutil.copy(base / CONFIG_NAME, out / CONFIG_NAME)  # base's file as it is, so the folders compare byte for byte
    if decoder:
        shutil.copy(base / decoder, out / decoder)
    write_checksum(out)
    record = {"base": str(base), "tuned": str(tuned), "alpha": alpha, "only": list(only),
              **{f"{k}_sha256": v for k, v in hashes.items()}, "sha256": verify_checksum(out)}  # fmt: skip
    (out / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return record
