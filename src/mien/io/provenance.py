"""Provenance on every image mien generates: who made it and how, in the file and in the pixels.

:func:`save_image` is the one writer of generated images (``mien generate``, :meth:`mien.edit.EditResult.save`,
the web UI): it adds the invisible mark (:mod:`mien.watermark`) and writes the metadata where viewers
and tools look for it:

- PNG: a text chunk ``mien`` holding the JSON record, ``Software``, and an XMP packet (iTXt
  ``XML:com.adobe.xmp``);
- JPEG and WebP: an XMP packet (the JSON record as ``mien:record``) and EXIF ``Software`` and
  ``ImageDescription`` (the JSON record).

The XMP packet also carries the IPTC ``DigitalSourceType`` a generated image declares
(``trainedAlgorithmicMedia``; ``compositeWithTrainedAlgorithmicMedia`` for a photo with a generated face
pasted in: IPTC Photo Metadata Standard 2023.1, https://cv.iptc.org/newscodes/digitalsourcetype/), and
``xmp:CreatorTool``. The record names mien and its version, and holds what the caller passes: for
``mien generate`` the request, seed, resolved settings, model hash and face index.

:func:`read_provenance` reads both back: the record, when a file still has it (metadata is easily
stripped by re-saving), and the watermark detection (which survives re-compression, resizing and
cropping).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from html import escape, unescape
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from mien import __version__, watermark
from mien.errors import MienError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
IPTC_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED, COMPOSITE = "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"
MIEN_NS = "urn:mien:provenance:1"
_EXIF_SOFTWARE, _EXIF_DESCRIPTION = 0x0131, 0x010E


def record(metadata: dict | None = None, source: str = GENERATED) -> dict:
    """The JSON record written into a file: mien, its version, the IPTC source type, then ``metadata``."""
    return {"software": "mien", "version": __version__, "digital_source_type": source, **(metadata or {})}


def _xmp(rec: dict) -> bytes:
    body = escape(json.dumps(rec, sort_keys=True), quote=True)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        f'    xmlns:mien="{MIEN_NS}"\n'
        f'    xmp:CreatorTool="mien {escape(str(rec.get("version", "")))}"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{IPTC_SOURCE}{escape(str(rec.get("digital_source_type", GENERATED)))}"\n'
        f'    mien:record="{body}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode("utf-8")


PNG_COMPRESS_LEVEL = 1  # zlib level of written PNGs (save_image)


def save_image(path: str | Path, rgb: np.ndarray, metadata: dict | None = None, *, source: str = GENERATED,
               mark: bool = True, quality: int = 95) -> Path:  # fmt: skip
    """Write ``rgb`` (uint8 H x W x 3) to ``path`` (.png, .jpg/.jpeg or .webp, chosen by the suffix) with the
    watermark in its pixels and :func:`record` of ``metadata`` in the file. ``source``: ``GENERATED`` or
    ``COMPOSITE`` (a photo with a generated part); ``mark=False`` only for images mien did not generate;
    ``quality``: JPEG/WebP quality."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MienError(f"{path}: mien writes .png, .jpg or .webp images, not '{path.suffix}'; change the name")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_image takes uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    rec = record(metadata, source)
    text = json.dumps(rec)  # ASCII (json escapes the rest), as EXIF ImageDescription requires
    im = Image.fromarray(watermark.embed(rgb) if mark else rgb)
    exif = Image.Exif()
    exif[_EXIF_SOFTWARE] = f"mien {__version__}"
    try:  # a full disk or a vanished folder is the user's to fix, not a bug; no half-written image stays
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("mien", text)
            info.add_text("Software", f"mien {__version__}")
            info.add_itxt("XML:com.adobe.xmp", _xmp(rec).decode("utf-8"))
            # zlib level 1: a third of the default level's time on a 512 px photo for files about 9 % larger
            # (docs/performance.md); the pixels are the same
            im.save(path, "PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
        else:
            exif[_EXIF_DESCRIPTION] = text
            im.save(path, fmt, quality=quality, exif=exif, xmp=_xmp(rec))
    except OSError as e:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise MienError(f"{path}: cannot write the image ({e.strerror or e}); free some disk space or write "
                        "elsewhere (--out)") from None
    return path


@dataclass(frozen=True)
class Provenance:
    """What :func:`read_provenance` found: the metadata record (None when the file has none) and the
    watermark detection."""

    record: dict | None
    watermark: watermark.Detection

    @property
    def generated(self) -> bool:
        return self.watermark.found or self.record is not None


def read_record(im: Image.Image) -> dict | None:
    """The mien record of an opened image: PNG text chunk, XMP, then EXIF ImageDescription."""
    candidates = [im.info.get("mien")]
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if xmp:
        xmp = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
        m = re.search(r'mien:record="([^"]*)"', xmp)
        candidates.append(unescape(m.group(1)) if m else None)
    try:
        candidates.append(im.getexif().get(_EXIF_DESCRIPTION))
    except Exception:  # a damaged EXIF block is no record, not an error
        pass
    for text in candidates:
        if not text:
            continue
        try:
            rec = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(rec, dict) and (rec.get("software") == "mien" or "model_hash" in rec):
            return rec
    return None


def read_provenance(path: str | Path) -> Provenance:
    """The record and watermark detection of the image at ``path`` (MienError when it cannot be read)."""
    from mien.io.image import load_rgb

    rgb = load_rgb(path)  # one-line errors for missing, damaged and foreign files
    with Image.open(path) as im:
        rec = read_record(im)
    return Provenance(rec, watermark.detect(rgb))
