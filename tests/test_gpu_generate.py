"""`python -m mien.evaluate.gpu_generate generate` run whole on the CPU with tiny random nets (the model
loading replaced by :func:`conftest.tiny_components_pipeline`): prepared inputs in; per variant, tar files of
about ``TAR_LIMIT`` bytes holding PNGs named as `mien evaluate` names its outputs and ``generate.json``;
``summary.json``; failed people and requests recorded, not fatal. The images are the pipeline's own for the
same inputs (why the module can say that ``--device cpu`` reproduces `mien evaluate`'s images)."""

import io
import json
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_aligned, tiny_components_pipeline

from mien.cli.analyze import example_path
from mien.errors import MienError
from mien.evaluate import gpu_generate
from mien.expression.targets import ExpressionRequest
from mien.io.image import load_rgb
from mien.pipeline import AlignedPhotos, MienPipeline
from mien.settings import GenerationSettings

HAPPY = {"0": "p0__happy__s0.png", "1": "p0__happy__s1.png"}


def _prepare(folder) -> None:
    """What `prepare` writes for two people: p0 aligned, with one request and one whose reference photo had no
    face; p1 without a face in its photos."""
    aligned = tiny_aligned(load_rgb(example_path()))  # a London Set photo (CC BY 4.0, see the README)
    face = aligned.faces[0]
    np.savez_compressed(folder / "inputs.npz", crops0=np.stack(aligned.crops), pose0=np.asarray(face.pose, np.float32),
                        bs0=np.asarray(face.blendshapes, np.float32))  # fmt: skip
    people = [{"identity": "p0", "requests": [
                  {"id": "happy", "mix": {"happy": 1.0}, "aus": {}, "like": None, "outputs": HAPPY},
                  {"id": "like", "mix": {}, "aus": {}, "like": None, "error": "reference photo: no face",
                   "outputs": {"0": "p0__like__s0.png"}}]},
              {"identity": "p1", "error": "no face found", "requests": []}]  # fmt: skip
    meta = {"benchmark": "tiny", "benchmark_sha256": "0" * 64, "people": people}
    (folder / "items.json").write_text(json.dumps(meta), encoding="utf-8")


def _members(out, variant: str) -> dict[str, bytes]:
    """Every file of a variant's tars; each file in one tar only."""
    files, names = {}, []
    for tar in sorted(out.glob(f"{variant}-*.tar")):
        with tarfile.open(tar) as t:
            names += t.getnames()
            files.update({m.name: t.extractfile(m).read() for m in t.getmembers()})
    assert len(names) == len(files), names
    return files


def test_generate_writes_the_pipelines_images_per_variant_in_bounded_tars(tmp_path, monkeypatch, capsys):
    pipe = tiny_components_pipeline()
    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    # two of these PNGs (6-14 kB) do not fit one tar: the split is exercised
    monkeypatch.setattr(gpu_generate, "TAR_LIMIT", 10_000)
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    _prepare(inputs)
    code = gpu_generate.main(["generate", "--inputs", str(inputs), "--out", str(out), "--device", "cpu",
                              "--variant", "fast:steps=2", "--variant", "sd:method=sdedit,steps=2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert [s["variant"] for s in summary] == ["fast", "sd"]
    assert summary[1]["settings"] == {"method": "sdedit", "steps": 2}
    for s in summary:
        assert s["images"] == 2 and s["model_hash"] == pipe.model_hash and s["device"] == "cpu"
        assert s["errors"] == ["p0 like: reference photo: no face", "p1: no face found"]
    arrays = np.load(inputs / "inputs.npz")
    faces = [SimpleNamespace(pose=arrays["pose0"], blendshapes=arrays["bs0"])]
    ident = pipe.identity_input(AlignedPhotos(list(arrays["crops0"]), faces))
    images = {}
    for name, settings in (("fast", {"steps": 2}), ("sd", {"method": "sdedit", "steps": 2})):
        files = _members(out, name)
        assert len(list(out.glob(f"{name}-*.tar"))) >= 2
        assert sorted(files) == sorted([*HAPPY.values(), "generate.json"])
        assert json.loads(files["generate.json"])["settings"] == settings
        for seed, file in HAPPY.items():
            want = pipe(ident, ExpressionRequest(mix={"happy": 1.0}), GenerationSettings(**settings), n=1,
                        seed=int(seed)).images[0]  # fmt: skip
            images[name, seed] = np.asarray(Image.open(io.BytesIO(files[file])))
            assert np.array_equal(images[name, seed], want), (name, file)
    # sdedit draws from each seed's noise (FlowEdit on random nets gives back the photo: tests/test_pipeline.py)
    assert not np.array_equal(images["sd", "0"], images["sd", "1"])


def test_variants_are_typed_settings_and_bad_ones_are_errors():
    parse = gpu_generate.parse_variant
    assert parse("default:") == ("default", {})
    assert parse("b:blendshape_guidance=0.3,steps=10,method=flowedit") == (
        "b", {"blendshape_guidance": 0.3, "steps": 10, "method": "flowedit"})
    for spec, message in (("b:colour=1", "unknown setting"), ("b:steps=x", "not a int"), ("nocolon", "NAME:"),
                          ("b:strength=2", "--strength")):  # fmt: skip
        with pytest.raises(MienError, match=message):
            parse(spec)


def test_generate_refuses_a_folder_without_prepared_inputs(tmp_path, capsys):
    code = gpu_generate.main(["generate", "--inputs", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "write them with `prepare` first" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("variant, words", [("fast:colour=1", "unknown setting"), ("fast:steps=0", "--steps 0")])
def test_a_bad_variant_stops_generate_before_any_work(tmp_path, capsys, variant, words):
    code = gpu_generate.main(["generate", "--inputs", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--device", "cpu", "--variant", variant])  # fmt: skip
    assert code != 0 and words in capsys.readouterr().err and not (tmp_path / "o").exists()
