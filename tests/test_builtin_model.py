"""Built-in model: behavioural invariants on the tiny random-weight preset (CPU, seconds)."""

import copy
import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from mien.builtin import MienModel, ModelConfig
from mien.guidance.classifier_free import guided_denoiser, guided_velocity
from mien.builtin.attention import StreamAttnProcessor
from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM
from mien.errors import MienError


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()  # see tests/test_train.py: 2 threads crawl on a busy 2-core box
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides) -> MienModel:
    torch.manual_seed(0)
    return MienModel(ModelConfig.from_preset("tiny", **overrides)).eval()


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cond = {"identity": torch.randn(batch, IDENTITY_DIM, generator=g), "expression": torch.rand(batch, EXPRESSION_DIM, generator=g)}
    return torch.randn(batch, 32, 16, 16, generator=g), torch.rand(batch, generator=g), cond


def test_tiny_preset_is_tiny_and_every_cross_attention_layer_has_streams():
    model = tiny()
    assert model.num_parameters() < 200_000
    cross = [m for m in model.unet.modules() if getattr(m, "is_cross_attention", False)]
    assert cross and all(isinstance(m.processor, StreamAttnProcessor) for m in cross)
    # the extra K/V projections are the model's own parameters, so they are trained and saved
    assert len(model.stream_kv) == len(cross)
    assert any(k.startswith("adapter.stream_kv.") for k in model.state_dict())


@torch.no_grad()
def test_zero_initialised_stream_changes_nothing():
    model = tiny()  # zero_init_streams=True: the expression stream's values start at 0
    x, t, cond = inputs()
    assert torch.equal(model.velocity(x, t, cond), model.velocity(x, t, cond, scales={"expression": 0}))


@torch.no_grad()
def test_scale_zero_removes_the_stream():
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    other = {**cond, "expression": torch.rand(2, EXPRESSION_DIM)}
    off = {"expression": 0.0}
    assert not torch.allclose(model.velocity(x, t, cond), model.velocity(x, t, other))
    assert torch.equal(model.velocity(x, t, cond, scales=off), model.velocity(x, t, other, scales=off))


@torch.no_grad()
def test_extra_streams_at_scale_zero_equal_stock_diffusers_attention():
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    tokens = model.encode_conditions(cond, 2)
    n_id = model.config.streams[0].n_tokens
    ours = model.unet(x, t * 1000, tokens, cross_attention_kwargs={"stream_scales": {"expression": 0}}).sample
    stock = copy.deepcopy(model.unet)
    stock.set_attn_processor(AttnProcessor2_0())
    reference = stock(x, t * 1000, tokens[:, :n_id]).sample  # the identity tokens alone
    assert torch.equal(ours, reference)  # same ops in the same order: bit-identical


@torch.no_grad()
def test_guidance_at_scale_one_is_the_conditional_prediction():
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    guided = guided_velocity(model, cond, scales=(1.0, 1.0))
    assert torch.equal(guided(x, t), model.velocity(x, t, cond))
    # and as the samplers' denoiser: x0 = x_t - t v at x_t = x / (1 + sigma), t = sigma / (1 + sigma)
    sigma = torch.tensor([0.5, 3.0])
    t_s = (sigma / (1 + sigma)).view(-1, 1, 1, 1)
    x0 = guided_denoiser(model, cond, scales=(1.0, 1.0))(x, sigma)
    torch.testing.assert_close(x0, x * (1 - t_s) - t_s * model.velocity(x * (1 - t_s), t_s.flatten(), cond))


@torch.no_grad()
def test_guidance_combines_the_three_branches():
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    u = model.velocity(x, t, {})
    c_id = model.velocity(x, t, {"identity": cond["identity"]})
    c_full = model.velocity(x, t, cond)
    expected = u + 2.0 * (c_id - u) + 3.0 * (c_full - c_id)
    torch.testing.assert_close(guided_velocity(model, cond, scales=(2.0, 3.0))(x, t), expected, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_expression_first_nesting_guides_identity_at_the_conditioned_expression():
    """Order (expression, identity): u + ge (c_expr - u) + gi (c_full - c_expr); at ge = 1 the unconditional
    branch has weight 0 and is not run (two branches), and the identity term never sees a nulled expression."""
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    u = model.velocity(x, t, {})
    c_expr = model.velocity(x, t, {"expression": cond["expression"]})
    c_full = model.velocity(x, t, cond)
    order = ("expression", "identity")
    expected = u + 2.0 * (c_expr - u) + 3.0 * (c_full - c_expr)
    torch.testing.assert_close(guided_velocity(model, cond, order, (2.0, 3.0))(x, t), expected, rtol=1e-4, atol=1e-5)
    rows = []
    original = model.velocity
    model.velocity = lambda x_, *a, **k: rows.append(x_.shape[0]) or original(x_, *a, **k)
    try:
        got = guided_velocity(model, cond, order, (1.0, 3.0))(x, t)
    finally:
        del model.velocity
    assert rows == [2 * x.shape[0]]  # c_expr and c_full, one batch
    torch.testing.assert_close(got, c_full + 2.0 * (c_full - c_expr), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, guided_velocity(model, cond, scales=(3.0, 1.0))(x, t), atol=1e-4)


@torch.no_grad()
def test_guidance_interval_guides_only_inside_it():
    model = tiny(zero_init_streams=False)
    x, _, cond = inputs()
    plain = guided_velocity(model, cond, scales=(1.0, 1.0))
    full = guided_velocity(model, cond, scales=(2.0, 3.0))
    limited = guided_velocity(model, cond, scales=(2.0, 3.0), interval=(0.4, 1.0))
    high, low = torch.full((2,), 0.7), torch.full((2,), 0.2)
    assert torch.equal(limited(x, high), full(x, high))
    assert torch.equal(limited(x, low), plain(x, low))
    assert not torch.allclose(full(x, low), plain(x, low))


def test_each_stream_owns_its_dropout():
    model = tiny(streams=[dict(name="identity", in_dim=IDENTITY_DIM, n_tokens=2, hidden_dim=32, dropout_prob=1.0),
                          dict(name="expression", in_dim=EXPRESSION_DIM, n_tokens=2, hidden_dim=32, dropout_prob=0.0)])
    model.train()
    _, _, cond = inputs()
    tokens = model.encode_conditions(cond, 2)
    assert torch.equal(tokens[:, :2], model.streams["identity"].null_tokens.expand(2, -1, -1))
    assert not torch.equal(tokens[:, 2:], model.streams["expression"].null_tokens.expand(2, -1, -1))


def test_save_load_round_trip_and_unknown_keys(tmp_path):
    model = tiny(zero_init_streams=False)
    x, t, cond = inputs()
    model.save_pretrained(tmp_path / "fp32", dtype=None)
    loaded = MienModel.from_pretrained(tmp_path / "fp32")
    with torch.no_grad():
        assert torch.equal(loaded.velocity(x, t, cond), model.velocity(x, t, cond))
    model.save_pretrained(tmp_path / "fp16")
    size = lambda d: (tmp_path / d / "model.safetensors").stat().st_size  # noqa: E731
    assert size("fp16") < 0.6 * size("fp32")
    config = json.loads((tmp_path / "fp32" / "config.json").read_text())
    (tmp_path / "fp32" / "config.json").write_text(json.dumps({**config, "latent_scale": 1.0}))
    with pytest.raises(MienError, match="latent_scale"):
        MienModel.from_pretrained(tmp_path / "fp32")
    config["streams"][0]["tokens"] = 4
    (tmp_path / "fp32" / "config.json").write_text(json.dumps(config))
    with pytest.raises(MienError, match="tokens"):
        MienModel.from_pretrained(tmp_path / "fp32")


def test_grown_reference_model_starts_as_the_saved_one(tmp_path):
    """load_weights_from zero-initialises the reference channels of conv_in (InstructPix2Pix)."""
    old = tiny(zero_init_streams=False)
    old.save_pretrained(tmp_path, dtype=None)
    new = tiny(zero_init_streams=False, reference=True)
    new.load_weights_from(tmp_path)
    x, t, cond = inputs()
    with torch.no_grad():
        assert torch.allclose(new.velocity(x, t, {**cond, "reference": torch.randn_like(x)}), old.velocity(x, t, cond), atol=1e-6)


def test_reference_is_used_and_nulled_with_the_identity_stream():
    model = tiny(reference=True)
    torch.nn.init.normal_(model.unet.conv_in.weight, std=0.1)
    x, t, cond = inputs()
    ref = torch.randn_like(x)
    with torch.no_grad():
        with_ref = model.velocity(x, t, {**cond, "reference": ref})
        without = model.velocity(x, t, cond)
        zeros = model.velocity(x, t, {**cond, "reference": torch.zeros_like(ref)})
        nulled = model.velocity(x, t, {**cond, "reference": ref}, null={"identity": torch.tensor([True, True])})
        no_identity = model.velocity(x, t, {**cond, "identity": None})
    assert not torch.allclose(with_ref, without)
    assert torch.equal(without, zeros)  # zeros mean "no reference"
    assert torch.allclose(nulled, no_identity)  # nulling identity drops the reference too
    with pytest.raises(ValueError, match="no spatial reference"):
        tiny().velocity(x, t, {**cond, "reference": ref})


def test_pooled_reference_sees_only_the_cell_means():
    model = tiny(reference=True, reference_pool=4)
    torch.nn.init.normal_(model.unet.conv_in.weight, std=0.1)
    x, t, cond = inputs()
    ref = torch.randn_like(x)
    # detail inside each 4 x 4 cell that sums to zero (in normalised units): invisible to the model
    detail = torch.randn(2, 32, 4, 4, 4, 4)
    detail = (detail - detail.mean((3, 5), keepdim=True)).reshape(2, 32, 16, 16)
    std = torch.tensor(model.config.latent_std or [1.0] * 32).view(1, -1, 1, 1)
    shifted = ref.clone()
    shifted[:, :, :4, :4] += 1.0  # one cell's mean moves: visible
    with torch.no_grad():
        base = model.velocity(x, t, {**cond, "reference": ref})
        same = model.velocity(x, t, {**cond, "reference": ref + detail * std})
        moved = model.velocity(x, t, {**cond, "reference": shifted})
    assert torch.allclose(base, same, atol=1e-5) and not torch.allclose(base, moved, atol=1e-3)
    with pytest.raises(MienError, match="reference_pool"):
        ModelConfig.from_preset("tiny", reference_pool=4)  # a pool needs a reference


def test_reference_config_needs_matching_input_channels():
    cfg = ModelConfig.from_preset("tiny", reference=True)
    assert cfg.unet["in_channels"] == 64
    with pytest.raises(MienError, match="in_channels"):
        ModelConfig(preset="tiny", unet={**cfg.unet, "in_channels": 32}, streams=cfg.streams, reference=True)


def test_a_damaged_weights_file_is_caught_by_its_checksum(tmp_path):
    tiny().save_pretrained(tmp_path)
    assert (tmp_path / "SHA256SUMS").read_text().endswith("  model.safetensors\n")
    MienModel.from_pretrained(tmp_path)  # intact: loads
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same length, a flipped byte in the last tensor
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(MienError, match="checksum"):
        MienModel.from_pretrained(tmp_path)
