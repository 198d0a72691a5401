"""Checks every command runs on its arguments before the first second of work: a bad output folder or
device is a one-line error at once, not an "internal error" after the models have loaded and the
images been generated."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mien.errors import MienError


def check_out_dir(out: Path, flag: str = "--out") -> None:
    """``out`` is, or can be created as, a folder this user can write in (a probe folder is made in its nearest
    existing parent and removed; nothing else is created here)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MienError(f"{flag} {out}: is a file, not a folder; name a folder (it is created if missing)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise MienError(f"{flag} {out}: {parent} is a file, so the folder cannot be created there; choose another path")
    try:  # permission bits miss a read-only mount, /proc, and everything for root: create and remove a probe
        tempfile.TemporaryDirectory(dir=parent, prefix=".mien-probe-").cleanup()
    except OSError as e:
        raise MienError(f"{flag} {out}: cannot write in {parent} ({e.strerror}); choose a folder you can write "
                        "to") from None


def check_device(device: str) -> None:
    """``device`` names a torch device this installation can use (cpu; cuda only with a CUDA build and a GPU)."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise MienError(f"--device {device}: unknown device; use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "a CPU-only build of torch" if torch.version.cuda is None else "no usable NVIDIA GPU was found"
            raise MienError(f"--device {device}: CUDA is not available here ({why}); use --device cpu "
                            "(the default), or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise MienError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise MienError(f"--device {device}: Apple's MPS is not available here; use --device cpu")
        return
    raise MienError(f"--device {device}: mien runs on cpu, cuda or mps, not {d.type}")


def critic_default(swap: bool) -> str:
    """The recogniser critic a request takes when none is given: an edit's, or a swap's (mien.settings)."""
    from mien.settings import RECOGNISER_CRITIC, SWAP_DEFAULTS

    return str(SWAP_DEFAULTS["recogniser_critic"]) if swap else RECOGNISER_CRITIC


def check_critic_weights(critic: str | None, blendshape_critic: str | None = None) -> None:
    """``--recogniser-critic latent`` or ``hybrid`` (an edit's default) has its weight file, the shipped reader or one in a
    weights folder that overrides it, intact, and so has ``--blendshape-critic latent`` or ``hybrid`` the blendshape
    reader's: a one-line :class:`mien.errors.WeightsError` before any photo is read or model loaded
    (mien.models.latent_reader)."""
    from mien.models.latent_reader import locate_weights

    if critic in ("latent", "hybrid"):
        locate_weights(critic)
    if blendshape_critic in ("latent", "hybrid"):
        locate_weights(blendshape_critic, kind="blendshape")
