"""The latent reader: MobileFaceNet's identity embedding read straight from the built-in model's latents,
without decoding them.

Why: recogniser guidance's critic (:func:`mien.guidance.recogniser.latent_embedder`) decodes each guided
state to a 128 px face with TAEF2 and backpropagates through the decoder, 0.13 s of CPU per step, 0.9 s
per image, most of it in the decoder's 128 px stage (docs/performance.md, "Where the time goes"). This
small convolutional net maps the normalised (32, 16, 16) latents to the same unit 192-d embedding and is
distilled from that critic (``scripts/train_latent_reader.py``): its targets are the decoded critic's
embeddings of the states recogniser-guided steps see in edits of train people (and, for smaller readers, of
noisy and interpolated states near their latents), and, since guidance follows only the direction of the score's
gradient, the decoded critic's gradients of the cosine to the person (Sobolev training: Czarnecki et al.,
"Sobolev Training for Neural Networks", NeurIPS 2017). The default critic, ``hybrid``, reads the early guided
steps with it and the last two with the decoded face.
How well it agrees with the decoded critic, and what it does to the edits: docs/performance.md, "A latent
critic: measured, not taken" and "A hybrid critic". Its weights are mien's own and ship with the package, beside
the built-in model (:data:`PACKAGED`: 8-bit weights with a float scale per output channel, 1.07 MB; listed in the
model folder's ``SHA256SUMS``, described in its model card). A reader in a weights folder (``MIEN_WEIGHTS``, the
user cache, ``../shared/weights``, as ``mien/latent_reader.safetensors``) takes its place, for trying another
reader (:func:`locate_weights`). Training is not bit-reproducible, so a rebuilt reader differs from the shipped
one: a weights-folder file is accepted when it is the shipped one or matches the SHA256 recorded beside it
(``latent_reader.safetensors.sha256``, written with it by :meth:`LatentReader.save`).
``scripts/ship_latent_reader.py`` turns a trained reader into the shipped file.

The same net with 52 outputs through a sigmoid (``unit=0``) is the blendshape reader: MediaPipe's 52 blendshapes as
:class:`mien.models.face_mesh.AlignedBlendshapes` reads them on the decoded face, distilled likewise from blendshape
guidance's decoded critic on fearful's blendshape-guided states of train people (``scripts/record_blendshape_states.py``,
``scripts/train_latent_reader.py --blendshapes``): :data:`BLENDSHAPE_WEIGHTS`, shipped as
``blendshape_reader.safetensors`` beside the recogniser's reader, read by ``--blendshape-critic latent`` and
``hybrid`` (docs/performance.md, "A blendshape reader").
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mien.weights import WeightFile

# Shipped in the built-in model's folder (PACKAGED) and listed in its SHA256SUMS; a file of the same path in a
# weights folder (mien.weights.search_dirs) overrides it. Not listed by `mien weights`: it is no third-party file.
# The SHA256 is the shipped file's; a rebuilt file is checked against its own recorded SHA256 instead
# (locate_weights).
WEIGHTS = WeightFile(
    "latent_reader", "mien/latent_reader.safetensors",
    "880b48f03ea7d61aae03dc8f1fa13808492e2c5ca8c0095c61c3f13aa6fa88a0",
    "shipped in src/mien/resources/model/ (its model card: how it was trained); scripts/ship_latent_reader.py",
    "Apache-2.0 (mien's own, distilled from MobileFaceNet and TAEF2)",
    "mien's latent reader: MobileFaceNet's embedding from the built-in model's latents",
)


# The blendshape reader (module docstring): the same rules, its own files.
BLENDSHAPE_WEIGHTS = WeightFile(
    "blendshape_reader", "mien/blendshape_reader.safetensors",
    "4538eceaa598970f073a865d12e8a70df0f682905496bd50c2f84c607fe2e451",
    "shipped in src/mien/resources/model/ (its model card: how it was trained); scripts/ship_latent_reader.py "
    "--blendshapes",
    "Apache-2.0 (mien's own, distilled from MediaPipe's face mesh and blendshape nets and TAEF2)",
    "mien's blendshape reader: MediaPipe's 52 blendshapes from the built-in model's latents",
)


# How a reader file stores its weights (LatentReader.save): "float16", or "int8", each weight tensor of two or more
# dimensions as 8-bit integers with a float32 scale per output channel (``NAME`` + SCALE_SUFFIX) and the rest in
# float16: half float16's size, the form the package ships (docs/performance.md, "A hybrid critic").
STORAGES = ("float16", "int8")
PACKAGED = "latent_reader.safetensors"  # its name in the built-in model's folder (packaged_path)
BLENDSHAPE_PACKAGED = "blendshape_reader.safetensors"
KINDS = ("recogniser", "blendshape")  # which reader: MobileFaceNet's embedding, or MediaPipe's blendshapes
SCALE_SUFFIX = ".qscale"


@dataclass(frozen=True)
class LatentReaderConfig:
    latent_channels: int = 32  # the built-in model's (TAEF2's) latent channels
    width: int = 64  # channels at the latent's 16 x 16
    blocks: int = 2  # residual blocks at 16 x 16
    deep_width: int = 128  # channels at 8 x 8 and 4 x 4
    embedding: int = 192  # outputs: MobileFaceNet's embedding size (the blendshape reader: 52)
    unit: int = 1  # 1: unit-length outputs (an embedding); 0: each output through a sigmoid (blendshape scores)


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class LatentReader(nn.Module):
    """(B, 32, 16, 16) normalised latents -> (B, 192) unit embeddings. SiLU throughout (smooth: the training
    loss differentiates the input gradient again); the head is a depthwise 4 x 4 convolution, MobileFaceNet's
    "global depthwise convolution" (Chen et al., "MobileFaceNets", 2018), so each face position keeps its own
    weights."""

    def __init__(self, config: LatentReaderConfig = LatentReaderConfig()):
        super().__init__()
        c = self.config = config
        self.stem = nn.Conv2d(c.latent_channels, c.width, 3, padding=1)
        self.blocks = nn.Sequential(*[Residual(c.width) for _ in range(c.blocks)])
        self.down1 = nn.Conv2d(c.width, c.deep_width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(c.deep_width, c.deep_width, 3, stride=2, padding=1)
        self.gdc = nn.Conv2d(c.deep_width, c.deep_width, 4, groups=c.deep_width)
        self.head = nn.Linear(c.deep_width, c.embedding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(z))
        x = F.silu(self.down2(F.silu(self.down1(F.silu(x)))))
        out = self.head(self.gdc(x).flatten(1))
        return F.normalize(out, dim=1) if self.config.unit else torch.sigmoid(out)

    @classmethod
    def from_weights(cls, path=None) -> "LatentReader":
        """The trained reader (float32, eval, frozen) from ``path`` or the checked file that
        :func:`locate_weights` finds (a one-line :class:`mien.errors.WeightsError` when it is missing or its
        checksum is wrong); either storage (:data:`STORAGES`) computes in float32."""
        from safetensors import safe_open

        path = path or locate_weights()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            state = {}
            for k in sorted(keys - {k for k in keys if k.endswith(SCALE_SUFFIX)}):
                t = f.get_tensor(k).float()
                if k + SCALE_SUFFIX in keys:  # int8: one float32 scale per output channel
                    t = t * f.get_tensor(k + SCALE_SUFFIX).float().view(-1, *[1] * (t.dim() - 1))
                state[k] = t
        config = LatentReaderConfig(**{k: int(v) for k, v in meta.items() if k in asdict(LatentReaderConfig())})
        reader = cls(config)
        reader.load_state_dict(state)
        return reader.eval().requires_grad_(False)

    def save(self, path, storage: str = "float16") -> str:
        """The weights in ``storage`` (:data:`STORAGES`: float16, or int8 with a scale per output channel, the
        shipped form), the config as safetensors metadata, and the file's SHA256 recorded beside it
        (:func:`mien.checksums.write_sidecar`, what :func:`locate_weights` checks a rebuilt reader against);
        returns that SHA256."""
        from safetensors.torch import save_file

        from mien.checksums import write_sidecar

        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r}: one of {', '.join(STORAGES)}")
        tensors = {}
        for k, v in self.state_dict().items():
            v = v.detach().float().cpu()
            if storage == "int8" and v.dim() >= 2:
                scale = v.abs().amax(dim=tuple(range(1, v.dim()))).clamp_min(1e-12) / 127
                tensors[k] = (v / scale.view(-1, *[1] * (v.dim() - 1))).round().clamp(-127, 127).to(torch.int8)
                tensors[k + SCALE_SUFFIX] = scale
            else:
                tensors[k] = v.half()
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(path),
                  metadata={**{k: str(v) for k, v in asdict(self.config).items()}, "storage": storage})
        return write_sidecar(path)


_SECTION = 'docs/performance.md, "A latent critic: measured, not taken"'


def packaged_path(kind: str = "recogniser") -> Path:
    """The shipped reader: ``latent_reader.safetensors`` (``kind`` "blendshape": ``blendshape_reader.safetensors``)
    in the built-in model's folder, listed in its ``SHA256SUMS``."""
    from importlib import resources

    return Path(str(resources.files("mien") / "resources" / "model")) / _files(kind)[1]


def _files(kind: str) -> tuple[WeightFile, str, str]:
    """(its WeightFile, its shipped name, the option that chooses another critic) of reader ``kind``."""
    if kind == "blendshape":
        return BLENDSHAPE_WEIGHTS, BLENDSHAPE_PACKAGED, "--blendshape-critic"
    if kind == "recogniser":
        return WEIGHTS, PACKAGED, "--recogniser-critic"
    raise ValueError(f"reader kind {kind!r}: one of {', '.join(KINDS)}")


def _checked_packaged(head: str, kind: str = "recogniser") -> Path:
    """:func:`packaged_path`, once it matches its line in the model folder's ``SHA256SUMS``."""
    from mien.checksums import read_sums, sha256_of
    from mien.errors import WeightsError

    weights, packaged, option = _files(kind)
    path = packaged_path(kind)
    sums = path.with_name("SHA256SUMS")
    fix = ("reinstall mien to get an intact copy, put a reader under a weights folder as "
           f"{weights.path} (docs/performance.md, \"A hybrid critic\"), or use {option} decoded")
    if not path.is_file():
        raise WeightsError(f"{head}: the shipped file {path} is missing; {fix}")
    try:
        want = read_sums(sums).get(packaged)
    except OSError:
        want = None
    if want is None:
        raise WeightsError(f"{head}: {sums} has no line for {packaged}, so the shipped file cannot be checked; {fix}")
    if sha256_of(path) != want:
        raise WeightsError(f"{head}: the shipped file {path} does not match its checksum in {sums.name} (damaged or "
                           f"replaced); {fix}")
    return path


def locate_weights(critic: str = "latent", kind: str = "recogniser") -> Path:
    """The weight file's path, once its content is checked. A reader in a weights folder
    (:func:`mien.weights.search_dirs`, as ``mien/latent_reader.safetensors``) comes first, for trying another reader:
    it is taken when it is the shipped file (:data:`WEIGHTS`'s SHA256) or matches the SHA256 recorded beside it.
    Without one, the shipped reader (:func:`packaged_path`), checked against the model folder's ``SHA256SUMS``.
    Otherwise a one-line :class:`mien.errors.WeightsError` saying what is wrong and what to do (the CLI calls it
    before any work when ``--recogniser-critic latent`` or ``hybrid``, named by ``critic``, is asked for).
    ``kind`` "blendshape": the blendshape reader's file (:data:`BLENDSHAPE_WEIGHTS`), for ``--blendshape-critic``."""
    from mien.errors import WeightsError
    from mien.checksums import recorded_sha256, sha256_of, sidecar
    from mien.weights import search_dirs

    weights, _, option = _files(kind)
    head = f"{option} {critic}: the {'blendshape' if kind == 'blendshape' else 'latent'} reader's weights"
    found = [d / weights.path for d in search_dirs() if (d / weights.path).is_file()]
    if not found:
        return _checked_packaged(head, kind)
    path = found[0]  # the first folder's file, as for the third-party files: no silent fall-back to another
    actual, recorded = sha256_of(path), recorded_sha256(path)
    if actual in (weights.sha256, recorded):
        return path
    beside = sidecar(path).name
    why = (f"do not match the SHA256 recorded in {beside} (damaged or cut short)" if recorded is not None else
           f"have no {beside} beside them recording their SHA256 and are not the shipped file "
           f"({weights.sha256[:12]}…)")
    raise WeightsError(f"{head}, {path}, {why}; rebuild them with scripts/train_latent_reader.py (it writes both "
                       f"files; {_SECTION}), remove them to use the shipped reader, or use {option} decoded")


@functools.lru_cache(maxsize=4)
def load_reader(device: torch.device | str = "cpu", kind: str = "recogniser") -> LatentReader:
    """The trained reader (``kind``: :data:`KINDS`) on ``device``, loaded once per process (it is frozen, so requests
    share it)."""
    with torch.inference_mode(False):  # a caller's inference_mode would keep its weights out of autograd
        return LatentReader.from_weights(locate_weights(kind=kind)).to(device)
