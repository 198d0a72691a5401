"""SHA256 of files, and checksum files in ``sha256sum``'s format, so ``sha256sum -c`` checks them too.

One line per file, ``<hex digest>  <name>\\n``, the name relative to the checksum file's folder (GNU
coreutils' text-mode output). mien writes three kinds: a model folder's ``SHA256SUMS``
(:func:`mien.builtin.model.write_checksum`), a training pack's ``SHA256SUMS`` (:mod:`mien.data.pack`) and
``NAME.sha256`` beside a file built here rather than downloaded (:func:`write_sidecar`; the latent reader's
weights).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20  # read 1 MiB at a time: model and pack files are tens of MB


def sha256_of(path: str | Path) -> str:
    """The file's SHA256 as lowercase hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sums(sums_path: str | Path, names: Iterable[str]) -> dict[str, str]:
    """Hash each of ``names`` (files in ``sums_path``'s folder), write their lines to ``sums_path`` in the
    order given, and return {name: digest}."""
    folder = Path(sums_path).parent
    digests = {name: sha256_of(folder / name) for name in names}
    Path(sums_path).write_text("".join(f"{digest}  {name}\n" for name, digest in digests.items()))
    return digests


def read_sums(sums_path: str | Path) -> dict[str, str]:
    """{name: lowercase digest} of a checksum file; blank lines are skipped, a line with a digest alone gets
    the name "". Also reads sha256sum's binary-mode lines (``<digest> *<name>``)."""
    sums = {}
    for line in Path(sums_path).read_text().splitlines():
        digest, _, rest = line.strip().partition(" ")
        if digest:
            sums[rest[1:] if rest[:1] in (" ", "*") else rest] = digest.lower()
    return sums


def failures(sums_path: str | Path) -> list[str]:
    """Names in a checksum file whose file is missing or has another SHA256 (what ``sha256sum -c`` reports)."""
    folder = Path(sums_path).parent
    return [name for name, digest in read_sums(sums_path).items()
            if not (folder / name).is_file() or sha256_of(folder / name) != digest]  # fmt: skip


def sidecar(path: str | Path) -> Path:
    """The checksum file beside ``path``, ``NAME.sha256``: how a file built here rather than downloaded carries
    its own SHA256."""
    return Path(path).with_name(Path(path).name + ".sha256")


def write_sidecar(path: str | Path) -> str:
    """Record ``path``'s SHA256 in :func:`sidecar` and return it."""
    return write_sums(sidecar(path), [Path(path).name])[Path(path).name]


def recorded_sha256(path: str | Path) -> str | None:
    """The SHA256 that :func:`sidecar` records for ``path`` (its first line's), "" when it is empty, None without one."""
    try:
        sums = read_sums(sidecar(path))
    except OSError:
        return None
    return next(iter(sums.values()), "")
