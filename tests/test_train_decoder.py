"""TAEF2 decoder fine-tune (mien.train.decoder): mechanics on random weights, the loading path of a
model folder that names a fine-tuned decoder, and its checksum."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mien.builtin.config import ModelConfig
from mien.builtin.model import MienModel
from mien.checksums import sha256_of
from mien.errors import MienError
from mien.models.taef2 import TAEF2
from mien.train.decoder import DECODER_FILE, DecoderTrainConfig, finetune_decoder, masked_mse, psnr


def toy_faces(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    # smooth images (a decoder from random weights can learn them in a few steps)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    images = (torch.nn.functional.interpolate(base, size=size, mode="bilinear") * 255).round().to(torch.uint8)
    masks = torch.ones(n, 1, size, size, dtype=torch.uint8)
    masks[:, :, :, : size // 4] = 0  # a filled strip on the left
    return images, masks


def test_masked_mse_ignores_filled_pixels():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., :2] = 1.0  # wrong only where the mask is 0
    m = torch.ones(1, 1, 4, 4)
    m[..., :2] = 0
    assert masked_mse(y, x, m) == 0
    assert masked_mse(y, x, torch.ones_like(m)) == pytest.approx(0.5)


def test_finetune_lowers_loss_and_resumes(tmp_path):
    torch.manual_seed(0)
    taef2 = TAEF2()
    images, masks = toy_faces()
    before = psnr(taef2, images, masks).mean()
    cfg = DecoderTrainConfig(lr=2e-3, batch_size=4, steps=30, log_every=5, ema_decay=0.5)
    out = finetune_decoder(taef2, images, masks, cfg, tmp_path)
    assert out["step"] == 30
    after = psnr(taef2, images, masks).mean()
    assert after > before + 1.0, (before, after)
    rows = (tmp_path / "decoder_loss.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert losses[-1] < losses[0]
    # the export is the EMA decoder, fp16, loadable as a TAEF2 decoder
    state = load_file(tmp_path / DECODER_FILE)
    assert all(v.dtype == torch.float16 for v in state.values())
    # resuming runs the remaining steps only
    cfg2 = DecoderTrainConfig(lr=2e-3, batch_size=4, steps=40, log_every=5, ema_decay=0.5)
    assert finetune_decoder(TAEF2(), images, masks, cfg2, tmp_path)["step"] == 40


def test_bad_inputs_are_one_line_errors(tmp_path):
    images, masks = toy_faces()
    with pytest.raises(MienError, match="uint8"):
        finetune_decoder(TAEF2(), images.float(), masks, DecoderTrainConfig(steps=1), tmp_path)


def tiny_config(**kw):
    return ModelConfig.from_preset("tiny", **kw)


def test_model_folder_with_decoder(tmp_path):
    torch.manual_seed(0)
    taef2 = TAEF2()
    images, masks = toy_faces(4)
    finetune_decoder(taef2, images, masks, DecoderTrainConfig(steps=2, batch_size=2), tmp_path / "run")
    model = MienModel(tiny_config(decoder=DECODER_FILE))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / DECODER_FILE).write_bytes((tmp_path / "run" / DECODER_FILE).read_bytes())
    model.save_pretrained(folder)
    assert DECODER_FILE in (folder / "SHA256SUMS").read_text()
    loaded = MienModel.from_pretrained(folder)
    assert loaded.decoder_path == folder / DECODER_FILE
    # outputs name the pair of weight files that made them, not the UNet alone
    assert loaded.sha256 not in (sha256_of(folder / "model.safetensors"), sha256_of(folder / DECODER_FILE))
    dec = TAEF2.from_weights(decoder_path=loaded.decoder_path).decoder.state_dict()
    assert torch.equal(dec["1.weight"], load_file(folder / DECODER_FILE)["1.weight"].float())
    # a damaged decoder is caught on load
    data = bytearray((folder / DECODER_FILE).read_bytes())
    data[-1] ^= 1
    (folder / DECODER_FILE).write_bytes(bytes(data))
    with pytest.raises(MienError, match="checksum"):
        MienModel.from_pretrained(folder)
    # a missing one too
    (folder / DECODER_FILE).unlink()
    with pytest.raises(MienError, match="missing"):
        MienModel.from_pretrained(folder)


def test_decoder_name_must_be_a_safetensors_file():
    with pytest.raises(MienError, match="safetensors"):
        tiny_config(decoder="../elsewhere/decoder.pth")
    assert json.loads(json.dumps(tiny_config().decoder)) is None
