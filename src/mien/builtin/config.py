"""Typed configs of the built-in model and its training, and the named model presets.

``ModelConfig`` is saved as ``config.json`` beside the weights and is all that is needed to rebuild
the model; ``TrainConfig`` is saved beside a training run. Loading rejects keys the dataclass does
not have (STYLE.md 5: a typo must not silently become a default). Presets are a plain dict of
keyword overrides (DiT's ``DiT_models``), not class paths.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mien.errors import MienError

LATENT_CHANNELS = 32  # TAEF2 latent channels (mien.models.taef2.LATENT_CHANNELS)
LATENT_SIZE = 16  # 128 px faces / 8
IDENTITY_DIM = 128  # the face-api descriptor, L2-normalised (mien.data.training_view says why only it)
EXPRESSION_DIM = 55  # 52 MediaPipe blendshapes + yaw, pitch, roll (degrees / 90)
# The attention projections a LoRA on the backbone wraps (diffusers' names; the adapter's own stream K/V
# live outside the UNet and are not touched). Here, not in backbone.py, so that the CLI parser reads
# PersonalizeConfig's defaults without importing torch.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Named module sets a person's LoRA may wrap (`mien personalize --lora-targets`; docs/personalize.md, "LoRA targets
# beyond attention"). diffusers' ResnetBlock2D names, which the built-in UNet shares: ``conv1``/``conv2`` are each
# ResNet block's 3x3 convolutions (peft's LoRA wraps Conv2d as it wraps Linear), ``time_emb_proj`` its projection
# of the time embedding, ``conv_in`` the first convolution, where the spatial reference latent enters (concatenated to
# the noisy latent; the other conditions enter through cross-attention's to_k/to_v, already in "attention").
LORA_TARGET_SETS = {
    "attention": LORA_TARGETS,
    "attention+conv": (*LORA_TARGETS, "conv1", "conv2"),
    "attention+time": (*LORA_TARGETS, "time_emb_proj"),
    "attention+conv+time": (*LORA_TARGETS, "conv1", "conv2", "time_emb_proj"),
    "attention+input": (*LORA_TARGETS, "conv_in"),
}


@dataclass
class StreamConfig:
    """One named condition stream: a vector in, ``n_tokens`` cross-attention tokens out."""

    name: str
    in_dim: int
    kind: str = "vector"  # a key of mien.builtin.streams.STREAM_KINDS
    n_tokens: int = 4
    hidden_dim: int = 512  # width of the MLP's hidden layer
    dropout_prob: float = 0.1  # training-time chance of replacing this stream by its null tokens


def _unet(channels, heads, layers_per_block, cross_dim, groups) -> dict:
    """UNet2DConditionModel kwargs for 16x16 latents with cross-attention at every level.

    diffusers quirk: ``attention_head_dim`` of ``UNet2DConditionModel`` is used as the number of
    heads per level (its own ``num_attention_heads`` argument raises), so we pass head counts.
    """
    levels = len(channels)
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=["CrossAttnDownBlock2D"] * levels,
        up_block_types=["CrossAttnUpBlock2D"] * levels,
        block_out_channels=list(channels),
        attention_head_dim=list(heads),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_dim,
        norm_num_groups=groups,
    )


def _streams(n_tokens: int, hidden: int) -> list[dict]:
    # identity first: it uses each cross-attention layer's own to_k/to_v (see attention.py)
    return [
        dict(name="identity", in_dim=IDENTITY_DIM, n_tokens=n_tokens, hidden_dim=hidden),
        dict(name="expression", in_dim=EXPRESSION_DIM, n_tokens=n_tokens, hidden_dim=hidden),
    ]


# Named model presets (parameter counts include streams and stream K/V; fp16 sizes in MB = 1e6 B).
# All have 3 levels at 16/8/4 latent pixels, one resnet + transformer per level going down and two
# going up, cross-attention everywhere, head width 32. Timed as one batch-3 forward (the three
# guidance branches) in CPU time on one core of the 2-core dev machine (a busy one: two threads
# could not be timed fairly there).
# - "tiny": tests only (130k parameters).
# - "small" (default): 13.4M, 26.7 MB, 2.9 GFLOP, ~73 ms -> 25 steps ~1.9 s of the 3 s end-to-end
#   target, with 3 MB left under the 30 MB budget for a further stream (background, text).
# - "medium": the budget filled: 14.9M, 29.8 MB, 3.5 GFLOP, ~84 ms. Also measured and not kept:
#   (64,128,128) x2 layers per level, 13.1M but 3.7 GFLOP, ~108 ms (16x16 work dominates).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(unet=_unet((16, 16), (2, 2), 1, 16, 4), streams=_streams(2, 32)),
    "small": dict(unet=_unet((64, 128, 192), (2, 4, 6), 1, 256, 32), streams=_streams(4, 512)),
    "medium": dict(unet=_unet((64, 160, 192), (2, 5, 6), 1, 256, 32), streams=_streams(4, 512)),
}


@dataclass
class ModelConfig:
    """Everything that defines a built-in model; saved as ``config.json`` beside its weights."""

    preset: str = "small"
    unet: dict = field(default_factory=dict)  # diffusers UNet2DConditionModel keyword arguments
    streams: list[StreamConfig] = field(default_factory=list)  # in token order; first uses to_k/to_v
    latent_mean: list[float] | None = None  # per-channel TAEF2 latent statistics (None: from data)
    latent_std: list[float] | None = None
    zero_init_streams: bool = True  # extra streams' value projections start at 0 (adapter-safe)
    # Spatial identity reference: the latent of an identity photo is concatenated to the noisy latent
    # as extra input channels (InstructPix2Pix's image conditioning, Brooks et al. 2023, sec. 3.4).
    # It belongs to the identity stream: nulled (zeros) with it, in dropout and in guidance.
    reference: bool = False
    # Coarse self-reference (docs/training.md, runs not shipped): k > 0 average-pools the reference latent
    # over k x k cells (and spreads it back) inside the model, so the reference carries colour,
    # lighting, hair and the face's layout but not its expression. A model trained that way is given
    # the edited photo itself as its reference; 0 passes the reference as it is.
    reference_pool: int = 0
    # TAEF2 decoder fine-tuned on the training faces (mien.train.decoder): a file name in the
    # model folder, listed in its SHA256SUMS; None decodes with the pretrained TAEF2 decoder. The encoder
    # (the latent space the model was trained in) is always the pretrained one.
    decoder: str | None = None
    # (y0, y1, x0, x1) latent cells an edit may redraw with --keep background; None: mien.regions.FACE_BOX
    # (the 128 px template's face at 16 x 16 latent cells)
    face_box: list[int] | None = None

    def __post_init__(self):
        self.streams = [s if isinstance(s, StreamConfig) else _build(StreamConfig, s) for s in self.streams]
        _check_unet_kwargs(self.unet)
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names) or not names:
            raise MienError(f"model config: stream names must be unique and non-empty, got {names}")
        want_in = LATENT_CHANNELS * (2 if self.reference else 1)
        if self.unet.get("in_channels", LATENT_CHANNELS) != want_in:
            raise MienError(f"model config: reference={self.reference} needs unet in_channels {want_in}, "
                            f"got {self.unet.get('in_channels')}")  # fmt: skip
        if "identity" not in names and self.reference:
            raise MienError("model config: a spatial reference needs an 'identity' stream (it is nulled with it)")
        if self.reference_pool < 0 or (self.reference_pool and not self.reference):
            raise MienError(f"model config: reference_pool {self.reference_pool} needs reference=True and a value >= 0")
        if self.decoder is not None and (not self.decoder.endswith(".safetensors") or "/" in self.decoder):
            raise MienError(f"model config: decoder {self.decoder!r} must be a .safetensors file name in the model folder")
        if self.face_box is not None and (len(self.face_box) != 4 or not (0 <= self.face_box[0] < self.face_box[1])
                                          or not (0 <= self.face_box[2] < self.face_box[3])):
            raise MienError(f"model config: face_box {self.face_box} must be [y0, y1, x0, x1] latent cells, y0 < y1, x0 < x1")
        for stats in (self.latent_mean, self.latent_std):
            if stats is not None and len(stats) != LATENT_CHANNELS:
                raise MienError(f"model config: latent statistics need one value per channel, got {len(stats)}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESETS:
            raise MienError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        data = {**copy.deepcopy(PRESETS[name]), "preset": name, **overrides}
        if data.get("reference"):
            data["unet"]["in_channels"] = 2 * LATENT_CHANNELS
        return from_dict(cls, data)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet["cross_attention_dim"])

    def backbone_config(self):
        """The backbone's part (:class:`mien.builtin.backbone.BackboneConfig`)."""
        from mien.builtin.backbone import BackboneConfig

        box = tuple(self.face_box) if self.face_box is not None else None
        return BackboneConfig(dict(self.unet), self.latent_mean, self.latent_std, self.reference, self.reference_pool, box)

    def adapter_config(self):
        """The condition adapter's part (:class:`mien.builtin.adapter.AdapterConfig`)."""
        from mien.builtin.adapter import AdapterConfig

        return AdapterConfig(list(self.streams), self.cross_attention_dim, self.zero_init_streams)


def _field(default, help: str):
    """A dataclass field whose help text is its documentation (peft's config style); the CLI shows it."""
    return field(default=default, metadata={"help": help})


FEEDBACK_STARTS = ("photo", "other")  # where the consistency losses' one-step prediction starts


def check_pair_limits(other_max_pose: float | None, other_max_distance: float | None) -> None:
    """A one-line MienError for a negative (or NaN) pair limit of the "other" start (None: no limit)."""
    for name, limit in (("other_max_pose", other_max_pose), ("other_max_distance", other_max_distance)):
        if limit is not None and not limit >= 0:
            raise MienError(f"{name} {limit} must be >= 0 (None: no limit)")


@dataclass
class TrainConfig:
    """One training run; saved as ``train_config.json`` in the run folder."""

    steps: int = _field(20_000, "optimizer steps in the whole run")
    batch_size: int = _field(256, "global batch, split evenly over processes")
    lr: float = _field(2e-4, "AdamW learning rate after warm-up")
    warmup_steps: int = _field(500, "linear learning-rate warm-up steps")
    weight_decay: float = _field(0.01, "AdamW weight decay")
    grad_clip: float = _field(1.0, "gradient-norm clip (0: off)")
    ema_decay: float = _field(0.999, "EMA decay of the saved weights (diffusers EMAModel, with its warm-up)")
    drop_all_prob: float = _field(
        0.05, "chance of nulling all streams of a sample at once, on top of each stream's own dropout "
        "(InstructPix2Pix drops each condition 5 % and both 5 %, Brooks et al. 2023, sec. 3.4)")  # fmt: skip
    t_sampling: str = _field("logit_normal", "'logit_normal' (SD3) or 'uniform' timesteps, see builtin/loss.py")
    flip_prob: float = _field(0.5, "mirror chance, as every documented run (docs/training.md); needs latents of mirrored "
                              "photos, which packs and --synthetic carry (train/data.py); 0 for tensors without them")
    seed: int = _field(0, "seed of weights, batches, noise and dropout")
    log_every: int = _field(50, "steps between loss.csv rows")
    checkpoint_every: int = _field(1000, "steps between checkpoints (also written when a run stops)")
    bf16: bool = _field(True, "bf16 autocast on CUDA (ignored on CPU)")
    pack: str = _field("", "training pack folder (mien data pack; read by mien train)")
    init_from: str = _field("", "a save_pretrained folder to start from instead of random weights")
    self_reference: float = _field(
        0.0, "chance that a sample's spatial reference is its own latent rather than another photo's "
        "(for models with reference_pool > 0, which see only a coarse copy of it; train/data.py)")  # fmt: skip
    expression_weight: float = _field(
        0.0, "weight of the consistency expression loss: MediaPipe blendshapes of the one-step prediction "
        "against the conditioning blendshapes (mien.train.loss_consistency; 0: off)")  # fmt: skip
    identity_weight: float = _field(
        0.0, "weight of the consistency identity loss: 1 - MobileFaceNet cosine of the one-step prediction "
        "to the identity photo (mien.train.loss_consistency; 0: off)")  # fmt: skip
    feedback_t_max: float = _field(
        0.4, "largest flow time t (1 = noise) at which a sample's one-step prediction gets the consistency losses")
    feedback_samples: int = _field(
        64, "samples per batch (those of lowest t) decoded for the consistency losses: bounds their cost")
    feedback_start: str = _field(
        "photo", "where the consistency losses' one-step prediction starts: 'photo' (the training photo noised "
        "to t) or 'other' (another photo of the person noised to t, conditioned on the training photo's "
        "expression: the prediction must change the expression; mien.train.loss_consistency)")
    other_max_pose: float | None = _field(
        None, "feedback start 'other' judges only pairs whose pose differs by at most this many degrees "
        "(largest |yaw|, |pitch|, |roll| difference; None: every pair; mien.train.data)")
    other_max_distance: float | None = _field(
        None, "feedback start 'other' judges only pairs whose identity vectors (L2-normalised face-api "
        "descriptors) lie at most this far apart (None: every pair; mien.train.data)")
    source_weights: dict[str, float] = field(default_factory=dict, metadata={"help": (
        "per-source sampling weight, SOURCE=W: each photo of the source is drawn W times per epoch (the source is "
        "the key's prefix, e.g. tw, cfp, lag, celeba; faces128's names such as taiwanese also do); a fraction "
        "draws that share of the source's photos once more, a fresh choice each epoch; 0 leaves the source out; "
        "unnamed sources 1 (mien.train.data.SourceDraw)"), "flag": "source-weight"})  # fmt: skip

    def __post_init__(self):  # checked where the config is made, so `mien train` refuses before any work
        if self.feedback_start not in FEEDBACK_STARTS:
            raise MienError(f"feedback_start {self.feedback_start!r}: choose one of {', '.join(FEEDBACK_STARTS)}")
        check_pair_limits(self.other_max_pose, self.other_max_distance)
        if not isinstance(self.source_weights, dict):
            raise MienError(f"source_weights must map source names to weights, got {self.source_weights!r}")
        for name, w in self.source_weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w < float("inf"):
                raise MienError(f"source weight {name}={w!r} must be a number >= 0")
        self.source_weights = {str(k): float(w) for k, w in self.source_weights.items()}


def _check_unet_kwargs(kwargs: dict) -> None:
    from mien.builtin.unet import supported

    if supported(kwargs):  # arguments the compact UNet takes are UNet2DConditionModel's: no diffusers import
        unknown = []
    else:
        from diffusers import UNet2DConditionModel

        allowed = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise MienError(f"model config: unknown UNet2DConditionModel arguments {unknown}")
    if "cross_attention_dim" not in kwargs:
        raise MienError("model config: unet needs cross_attention_dim (the width of every stream's tokens)")


def _build(cls, data: dict):
    if not isinstance(data, dict):
        raise MienError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MienError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**data)


def from_dict(cls, data: dict):
    """A config dataclass from a dict, rejecting unknown keys with a message naming them."""
    return _build(cls, data)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def save_json(config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_json(cls, path: str | Path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MienError(f"cannot read {cls.__name__} from {path}: {e}") from e
    return from_dict(cls, data)
