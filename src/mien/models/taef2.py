"""TAEF2: the tiny autoencoder for the FLUX.2 latent space (madebyollin/taesd, MIT).

RGB in [0, 1] -> 32-channel latent at 1/8 resolution -> RGB in [0, 1]. The built-in model diffuses
in this space (DESIGN.md, Models), and the expression-crafting loss decodes predicted latents with
it, so it must stay differentiable (``decode(..., clamp=False)`` keeps gradients everywhere).

Layout (inferred from the published state_dicts, whose keys index an ``nn.Sequential``, and from
``taesd.py`` in github.com/madebyollin/taesd; this is our own code, not a copy):

  encoder: conv(3,64) Block | down Block Block Block | down Block Block Block
           | down Block* Block* Block* | conv(64,32)                        (indices 0..14)
  decoder: Clamp conv(32,64) ReLU | Block* Block* Block* up conv | Block x3 up conv
           | Block x3 up conv | Block conv(64,3)                             (indices 0..19)

``down`` is a stride-2 3x3 conv without bias, ``up`` a nearest 2x upsample followed by a 3x3 conv
without bias. ``Block*`` marks the FLUX.2 variant's "mid-block GroupNorm" branch at the lowest
resolution (keys ``N.pool.{0,1,3}``): 1x1 conv 64->256, GroupNorm(4 groups), ReLU, 1x1 conv 256->64,
added to the block input before the block (``use_midblock_gn`` in taesd.py). The 4 groups are not
stored in the weights; they come from taesd.py, and the dev-face PSNR (tests/test_taef2.py) confirms
them.

The latent is FLUX.2's *unpatchified, unnormalised* latent (32 x H/8 x W/8): FLUX.2 pipelines
2x2-patchify it to 128 channels and batch-normalise it; mien does neither and normalises per
channel with its own statistics (weights/README.md: std ~0.9, mean ~0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LATENT_CHANNELS = 32
WIDTH = 64  # every hidden layer of TAESD-family autoencoders is 64 channels wide
DOWNSCALE = 8


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the decoder input to (-3, 3): taesd.py's ``Clamp``, tanh(x/3)*3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block: conv-ReLU-conv-ReLU-conv plus identity skip, then ReLU (taesd.py ``Block``).

    With ``pool=True`` (FLUX.2 variant) a 1x1-conv / GroupNorm branch is first added to the input;
    GroupNorm sees the whole feature map, so it carries global image statistics into the block.
    """

    def __init__(self, ch: int = WIDTH, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(ch, ch), nn.ReLU(), _conv(ch, ch), nn.ReLU(), _conv(ch, ch))
        self.fuse = nn.ReLU()
        self.pool = None
        if pool:
            hidden = 4 * ch
            self.pool = nn.Sequential(
                nn.Conv2d(ch, hidden, 1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, ch, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def build_encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Three stride-2 stages; the last stage's blocks carry the GroupNorm branch."""
    layers: list[nn.Module] = [_conv(3, WIDTH), Block()]
    for stage in range(3):
        layers.append(_conv(WIDTH, WIDTH, stride=2, bias=False))
        layers += [Block(pool=stage == 2) for _ in range(3)]
    layers.append(_conv(WIDTH, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Mirror of the encoder; the first (lowest-resolution) stage carries the GroupNorm branch."""
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    for stage in range(3):
        layers += [Block(pool=stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
    layers += [Block(), _conv(WIDTH, 3)]
    return nn.Sequential(*layers)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":  # a decoder fine-tuned by mien (mien.train.decoder), stored in fp16
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(path).items()}
    # weights_only=True: the .pth files are plain tensor dicts; never unpickle arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


class TAEF2(nn.Module):
    """Tiny FLUX.2 autoencoder. ``encode``: (B,3,H,W) in [0,1] -> (B,32,H/8,W/8); ``decode``: back.

    H and W must be multiples of 8. Build with :meth:`from_weights` for the pretrained model;
    ``TAEF2()`` alone has random weights (for tests and shape checks).
    """

    latent_channels = LATENT_CHANNELS
    downscale = DOWNSCALE

    def __init__(self):
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()

    @classmethod
    def from_weights(cls, encoder_path: str | Path | None = None, decoder_path: str | Path | None = None,
                     decoder: bool = True) -> "TAEF2":  # fmt: skip
        """Pretrained TAEF2 in eval mode with frozen parameters.

        Paths default to the verified files from :func:`mien.weights.locate` (raises
        :class:`mien.errors.WeightsError` saying where to put them when missing). ``decoder_path`` may
        also be a ``.safetensors`` decoder fine-tuned by mien (:mod:`mien.train.decoder`), which a
        built-in model names in its config (``ModelConfig.decoder``). ``decoder=False`` loads the encoder
        only (for encoding training data where the decoder's weights are not carried); ``decode`` then
        raises.
        """
        from mien.weights import locate

        model = cls()
        model.encoder.load_state_dict(_load_state_dict(Path(encoder_path or locate("taef2_encoder"))))
        if decoder:
            model.decoder.load_state_dict(_load_state_dict(Path(decoder_path or locate("taef2_decoder"))))
        else:
            model.decoder = None
        return model.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % DOWNSCALE or x.shape[-2] % DOWNSCALE:
            raise ValueError(f"TAEF2.encode needs H and W divisible by {DOWNSCALE}, got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latent -> RGB. ``clamp=False`` returns the raw output (about [0,1]) with full gradients."""
        if self.decoder is None:
            raise RuntimeError("this TAEF2 was loaded without its decoder (from_weights(decoder=False))")
        y = self.decoder(z)
        return y.clamp(0, 1) if clamp else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Round trip, for reconstruction checks."""
        return self.decode(self.encode(x))
