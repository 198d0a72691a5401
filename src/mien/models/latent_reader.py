"""The latent reader: MobileFaceNet's identity embedding read straight from the built-in model's latents,
without decoding them.

Why: recogniser guidance's critic (:func:`mien.guidance.recogniser.latent_embedder`) decodes each guided
state to a 128 px face with TAEF2 and backpropagates through the decoder, 0.13 s of CPU per step, 0.9 s
per image, most of it in the decoder's 128 px stage (docs/performance.md, "Where the time goes"). This
small convolutional net maps the normalised (32, 16, 16) latents to the same unit 192-d embedding and is
distilled from that critic (``scripts/train_latent_reader.py``): its targets are the decoded critic's
embeddings of train people's latents and of noisy and interpolated states near them, and, since guidance
follows only the direction of the score's gradient, the decoded critic's gradients of the cosine to the
person (Sobolev training: Czarnecki et al., "Sobolev Training for Neural Networks", NeurIPS 2017).
How well it agrees with the decoded critic, and what it does to the edits: docs/performance.md, "A latent
critic: measured, not taken" (not yet well enough to be the default). Its weights are mien's own
(:data:`WEIGHTS`, not in the repository), found in the weights folders as the third-party files are
(:func:`locate_weights`). Training is not bit-reproducible, so a rebuilt reader differs from the measured one:
a file is accepted when it is the measured one or matches the SHA256 recorded beside it
(``latent_reader.safetensors.sha256``, written with it by :meth:`LatentReader.save`).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mien.weights import WeightFile

# Searched for in the third-party files' folders (mien.weights.search_dirs), but not listed by `mien weights`:
# only --recogniser-critic latent needs it. Trained by the two scripts the module docstring names. The SHA256 is
# the file docs/performance.md's figures were measured with; a rebuilt file is checked against its own recorded
# SHA256 instead (locate_weights).
WEIGHTS = WeightFile(
    "latent_reader", "mien/latent_reader.safetensors",
    "40c80f48ce65fecb59858adfae73c0069bf134b7a18cbe433b9f558ab0610ffc",
    "built by scripts/make_latent_reader_data.py and scripts/train_latent_reader.py (docs/performance.md)",
    "Apache-2.0 (mien's own, distilled from MobileFaceNet and TAEF2)",
    "mien's latent reader: MobileFaceNet's embedding from the built-in model's latents",
)


@dataclass(frozen=True)
class LatentReaderConfig:
    latent_channels: int = 32  # the built-in model's (TAEF2's) latent channels
    width: int = 64  # channels at the latent's 16 x 16
    blocks: int = 2  # residual blocks at 16 x 16
    deep_width: int = 128  # channels at 8 x 8 and 4 x 4
    embedding: int = 192  # MobileFaceNet's embedding size


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
        return F.normalize(self.head(self.gdc(x).flatten(1)), dim=1)

    @classmethod
    def from_weights(cls, path=None) -> "LatentReader":
        """The trained reader (float32, eval, frozen) from ``path`` or the checked file that
        :func:`locate_weights` finds (a one-line :class:`mien.errors.WeightsError` when it is missing or its
        checksum is wrong)."""
        from safetensors import safe_open

        path = path or locate_weights()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        config = LatentReaderConfig(**{k: int(v) for k, v in meta.items() if k in asdict(LatentReaderConfig())})
        reader = cls(config)
        reader.load_state_dict(state)
        return reader.eval().requires_grad_(False)

    def save(self, path) -> str:
        """float16 weights, the config as safetensors metadata, and the file's SHA256 recorded beside it
        (:func:`mien.checksums.write_sidecar`, what :func:`locate_weights` checks a rebuilt reader against);
        returns that SHA256."""
        from safetensors.torch import save_file

        from mien.checksums import write_sidecar

        save_file({k: v.half().contiguous() for k, v in self.state_dict().items()}, str(path),
                  metadata={k: str(v) for k, v in asdict(self.config).items()})  # fmt: skip
        return write_sidecar(path)


_SECTION = 'docs/performance.md, "A latent critic: measured, not taken"'


def locate_weights(critic: str = "latent") -> Path:
    """The weight file's path, once its content is checked: the measured file (:data:`WEIGHTS`'s SHA256) or one
    matching the SHA256 recorded beside it. Otherwise a one-line :class:`mien.errors.WeightsError` saying what is
    wrong and what to do (the CLI calls it before any work when ``--recogniser-critic latent`` or ``hybrid``, named
    by ``critic``, is asked for)."""
    from mien.errors import WeightsError
    from mien.checksums import recorded_sha256, sha256_of, sidecar
    from mien.weights import search_dirs

    head = f"--recogniser-critic {critic}: the latent reader's weights"
    found = [d / WEIGHTS.path for d in search_dirs() if (d / WEIGHTS.path).is_file()]
    if not found:
        where = ", ".join(str(d) for d in search_dirs())
        raise WeightsError(f"{head}, {WEIGHTS.path}, are in no weights folder ({where}); they are not shipped: build "
                           f"them with scripts/make_latent_reader_data.py and scripts/train_latent_reader.py "
                           f"({_SECTION}) and put the .safetensors and its .sha256 under a weights folder as "
                           f"{WEIGHTS.path}, or use --recogniser-critic decoded")  # fmt: skip
    path = found[0]  # the first folder's file, as for the third-party files: no silent fall-back to another
    actual, recorded = sha256_of(path), recorded_sha256(path)
    if actual in (WEIGHTS.sha256, recorded):
        return path
    beside = sidecar(path).name
    why = (f"do not match the SHA256 recorded in {beside} (damaged or cut short)" if recorded is not None else
           f"have no {beside} beside them recording their SHA256 and are not the measured file ({WEIGHTS.sha256[:12]}…)")
    raise WeightsError(f"{head}, {path}, {why}; rebuild them with scripts/train_latent_reader.py (it writes both "
                       f"files; {_SECTION}), or use --recogniser-critic decoded")


@functools.lru_cache(maxsize=4)
def load_reader(device: torch.device | str = "cpu") -> LatentReader:
    """The trained reader on ``device``, loaded once per process (it is frozen, so requests share it)."""
    with torch.inference_mode(False):  # a caller's inference_mode would keep its weights out of autograd
        return LatentReader.from_weights().to(device)
