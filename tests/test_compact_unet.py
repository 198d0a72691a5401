"""The compact UNet (mien.builtin.unet) is diffusers' UNet2DConditionModel for mien's configurations: the same
parameter names, and bit-identical outputs and gradients with the condition adapter attached."""

import subprocess
import sys

import pytest
import torch

from mien.builtin.adapter import AdapterConfig, ConditionAdapter
from mien.builtin.config import PRESETS, ModelConfig
from mien.builtin.unet import CompactUNet, build_unet, supported


def _pair(unet_kwargs: dict, streams) -> tuple:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    ref = UNet2DConditionModel(**unet_kwargs)
    compact = CompactUNet(**unet_kwargs)
    assert sorted(ref.state_dict()) == sorted(compact.state_dict())
    compact.load_state_dict(ref.state_dict())
    config = AdapterConfig(streams=streams, width=unet_kwargs["cross_attention_dim"], zero_init_streams=False)
    torch.manual_seed(1)
    adapter = ConditionAdapter(config).attach(ref)
    ConditionAdapter(config).attach(compact).load_state_dict(adapter.state_dict())
    return ref.eval(), compact.eval()


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_outputs_and_gradients_are_identical_to_diffusers(preset):
    cfg = ModelConfig.from_preset(preset, reference=True)
    assert supported(cfg.unet)
    ref, compact = _pair(cfg.unet, cfg.streams)
    tokens_n = sum(s.n_tokens for s in cfg.streams)
    torch.manual_seed(2)
    x = torch.randn(3, cfg.unet["in_channels"], 16, 16)
    t = torch.tensor([10.0, 500.0, 990.0])
    tokens = torch.randn(3, tokens_n, cfg.unet["cross_attention_dim"])
    for kwargs in (None, {"stream_scales": {"expression": 0.5}}):
        with torch.no_grad():
            a = ref(x, t, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample
            b = compact(x, t, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample
        assert torch.equal(a, b)
    grads = []
    for net in (ref, compact):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xx, t, encoder_hidden_states=tokens).sample.square().sum(), xx)
        grads.append(g)
    assert torch.equal(*grads)


def test_other_configurations_use_diffusers():
    kwargs = {**PRESETS["tiny"]["unet"], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}
    assert not supported(kwargs)
    assert type(build_unet(kwargs)).__name__ == "UNet2DConditionModel"
    assert not supported({**PRESETS["tiny"]["unet"], "use_linear_projection": True})
    assert isinstance(build_unet(PRESETS["tiny"]["unet"]), CompactUNet)


def test_loading_the_shipped_model_does_not_import_diffusers():
    code = ("import sys\nfrom mien.builtin.model import MienModel\nfrom mien.pipeline import default_model_dir\n"
            "MienModel.from_pretrained(default_model_dir())\nprint(any(m.split('.')[0] == 'diffusers' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
