"""Backbone and condition adapter apart: mien's adapter on a Stable-Diffusion-shaped diffusers UNet, a peft
LoRA on the built-in backbone, and a guidance kind added by registering one class. Tiny random weights, no
../shared."""

import numpy as np
import pytest
import torch
from conftest import tiny_aligned, tiny_components_pipeline
from diffusers import UNet2DConditionModel

from mien.builtin import AdaptedModel, AdapterConfig, Backbone, BackboneConfig, ConditionAdapter, MienModel, ModelConfig
from mien.builtin.config import StreamConfig
from mien.guidance import Guidance
from mien.guidance.classifier_free import guided_velocity


def sd_unet(seed: int = 0) -> UNet2DConditionModel:
    """A tiny UNet shaped like Stable Diffusion's (4 latent channels, CrossAttnDownBlock2D, cross-attention
    width 32; diffusers' own tiny test configuration)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8).eval()  # fmt: skip


def adapter_config(zero_init: bool) -> AdapterConfig:
    return AdapterConfig([StreamConfig("identity", 128, n_tokens=2, hidden_dim=32),
                          StreamConfig("expression", 55, n_tokens=2, hidden_dim=32)], width=32,
                         zero_init_streams=zero_init)  # fmt: skip


def sd_model(zero_init: bool = False, seed: int = 0) -> AdaptedModel:
    unet = sd_unet(seed)
    torch.manual_seed(seed + 1)
    return AdaptedModel(Backbone(BackboneConfig(), unet), ConditionAdapter(adapter_config(zero_init)).attach(unet)).eval()


def conditions(batch: int = 2, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"identity": torch.randn(batch, 128, generator=g), "expression": torch.rand(batch, 55, generator=g)}


@torch.no_grad()
def test_a_stable_diffusion_unet_takes_the_adapter_and_runs_a_guided_step():
    model = sd_model()
    assert model.backbone.latent_shape == (4, 8, 8)
    cond, x, t = conditions(), torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.full((2,), 0.7)
    guided = guided_velocity(model, cond, scales=(2.0, 3.0))(x, t)
    ones = torch.ones(2, dtype=torch.bool)
    u = model.velocity(x, t, cond, null={"identity": ones, "expression": ones})
    c_id = model.velocity(x, t, cond, null={"expression": ones})
    c = model.velocity(x, t, cond)
    torch.testing.assert_close(guided, u + 2 * (c_id - u) + 3 * (c - c_id), rtol=1e-4, atol=1e-5)
    x_next = x + (0.6 - 0.7) * guided  # one Euler step of the flow
    assert x_next.isfinite().all() and not torch.equal(x_next, x)
    # the adapter's expression stream reaches the UNet; zero-initialised, it leaves the output as it was
    other = {**cond, "expression": cond["expression"].flip(0)}
    assert (model.velocity(x, t, other) - c).abs().max() > 1e-4
    quiet = sd_model(zero_init=True)
    torch.testing.assert_close(quiet.velocity(x, t, other), quiet.velocity(x, t, cond), rtol=0, atol=1e-6)


@torch.no_grad()
def test_the_adapter_saves_alone_and_attaches_to_another_copy_of_the_unet(tmp_path):
    model = sd_model(seed=5)
    model.adapter.save_pretrained(tmp_path)
    unet = sd_unet(seed=5)  # the same backbone weights, no adapter yet
    again = AdaptedModel(Backbone(BackboneConfig(), unet), ConditionAdapter.from_pretrained(tmp_path, unet)).eval()
    cond, x = conditions(), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(again.velocity(x, 0.4, cond), model.velocity(x, 0.4, cond), rtol=0, atol=0)
    from mien.errors import MienError

    with pytest.raises(MienError, match="cross_attention_dim"):
        ConditionAdapter(AdapterConfig(adapter_config(True).streams, width=16)).attach(sd_unet())


@torch.no_grad()
def test_a_peft_lora_wraps_the_builtin_backbone_and_at_scale_0_equals_it():
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    from mien.builtin.config import LORA_TARGETS

    torch.manual_seed(0)
    model = MienModel(ModelConfig.from_preset("tiny", reference=True)).eval()
    for p in model.adapter.stream_kv.parameters():  # the tiny model's zero-initialised stream values: wake them
        p.normal_(0, 0.5)
    cond = {**conditions(), "reference": torch.randn(2, 32, 16, 16)}
    x, t = torch.randn(2, 32, 16, 16), torch.full((2,), 0.5)
    base = model.velocity(x, t, cond)
    torch.manual_seed(1)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=list(LORA_TARGETS), init_lora_weights=False),
                            model.backbone.unet)  # fmt: skip
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers and not any(isinstance(m, LoraLayer) for m in model.adapter.modules())  # the adapter is not wrapped
    assert (model.velocity(x, t, cond) - base).abs().max() > 1e-3
    for m in layers:
        m.set_scale("default", 0.0)
    torch.testing.assert_close(model.velocity(x, t, cond), base, rtol=0, atol=1e-6)
    for m in layers:
        m.set_scale("default", 1.0)
        m.enable_adapters(False)
    torch.testing.assert_close(model.velocity(x, t, cond), base, rtol=0, atol=1e-6)


def test_shipped_model_file_splits_into_backbone_and_adapter_and_saves_back_unchanged(tmp_path):
    """The shipped model.safetensors loads through the splitting loader, and saved again it is the same file."""
    from safetensors.torch import load_file

    from mien.builtin.model import WEIGHTS_NAME
    from mien.pipeline import default_model_dir

    model = MienModel.from_pretrained(default_model_dir())
    assert model.backbone.latent_shape == (32, 16, 16) and model.backbone.config.reference
    model.save_pretrained(tmp_path)
    ours, shipped = load_file(tmp_path / WEIGHTS_NAME), load_file(default_model_dir() / WEIGHTS_NAME)
    assert ours.keys() == shipped.keys() and all(torch.equal(ours[k], shipped[k]) for k in shipped)


# --- a guidance kind added from outside: one class and one register() call ------------------------

class TowardMean(Guidance):  # the whole kind: a module of mien.guidance would hold exactly this class
    """After each FlowEdit step, pull the face region of the (normalised) latent toward the latent mean."""

    name = "toward_mean"

    def __init__(self, scale: float):
        self.scale = scale

    def correction(self, ctx):
        region = ctx.region

        def correct(z, t, t_next):
            return z - self.scale * (t - t_next) * region * z

        return correct


def test_a_registered_toy_guidance_kind_is_applied(monkeypatch):
    import mien.guidance
    from mien.cli.analyze import example_path
    from mien.expression.targets import ExpressionRequest
    from mien.io.image import load_rgb
    from mien.regions import keep_mask
    from mien.settings import GenerationSettings

    pipe = tiny_components_pipeline()
    ident = pipe.identity_input(tiny_aligned(load_rgb(example_path())))
    req, s = ExpressionRequest(mix={"happy": 1.0}), GenerationSettings(steps=3, recogniser_guidance=0.0)
    before = pipe(ident, req, s, seed=1).latents[0]
    monkeypatch.setattr(mien.guidance, "GUIDANCE", dict(mien.guidance.GUIDANCE))
    mien.guidance.register(TowardMean(scale=0.5))
    after = pipe(ident, req, s, seed=1).latents[0]
    kept = keep_mask("background")[0, 0] == 1
    z0, z1 = pipe.model.normalize(before[None])[0], pipe.model.normalize(after[None])[0]
    assert z1[:, ~kept].norm() < 0.9 * z0[:, ~kept].norm()  # the face moved toward the mean
    assert (after - before)[:, kept].abs().max() < 1e-5  # the kept background did not
    assert np.isfinite(after.numpy()).all()
