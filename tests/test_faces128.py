"""The faces128 reader: manifest counts against the pool's README, selection, decoding, the
validity mask against the manifest's `fill`, and errors that name the shard, key or line.

Fakes (truncated or tiny shards, broken manifests) are written under tmp_path only; nothing is
ever written into ../shared, and no face image is saved anywhere.
"""

import io
import json
import multiprocessing
import random
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mien.data import faces128 as F
from mien.data.faces128 import Faces128, MienError, load_manifest, select


@pytest.fixture(scope="module")
def data_dir(shared_dir) -> Path:
    return shared_dir / "data" / "faces128"


@pytest.fixture(scope="module")
def manifest(data_dir):
    return load_manifest(data_dir)


@pytest.fixture(scope="module")
def faces(data_dir, manifest):
    with Faces128(data_dir, manifest) as f:
        yield f


def _row(key: str, shard: str, **extra) -> dict:
    """A well-formed synthetic manifest row (no real face data)."""
    return {
        "key": key, "shard": shard, "split": "dev", "source": "london", "fill": 0.0,
        "affine": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "src_size": [128, 128], **extra,
    }


def _write_manifest(folder: Path, rows) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# --- manifest and selection ----------------------------------------------------------------------


@pytest.mark.shared
def test_manifest_counts_match_readme(manifest):
    assert Counter(s.split for s in manifest) == {"train": 36_050, "dev": 737}
    assert Counter((s.split, s.source) for s in manifest) == {
        ("train", "utkface"): 22_831, ("train", "celeba"): 6_042, ("train", "cfp"): 4_410,
        ("train", "lag"): 1_856, ("train", "taiwanese"): 911,
        ("dev", "essex94"): 292, ("dev", "cfp"): 243, ("dev", "taiwanese"): 122,
        ("dev", "london"): 80,
    }
    train_ids = {s.identity for s in select(manifest, split="train")} - {None}
    assert len(train_ids) == 1_752
    dev_people = {s.identity: s.source for s in select(manifest, split="dev")}
    dev_ids = Counter(dev_people.values())
    assert dev_ids == {"essex94": 18, "cfp": 25, "taiwanese": 3, "london": 40}
    utk = select(manifest, source="utkface")
    assert all(s.identity is None for s in utk)


@pytest.mark.shared
def test_sample_fields(manifest):
    tw = select(manifest, source="taiwanese")[0]
    assert tw.expression in F.EXPRESSIONS and tw.identity.startswith("tw:")
    assert "observer_ratings" in tw.extra and "view" in tw.extra
    assert np.asarray(tw.affine).shape == (2, 3) and len(tw.src_size) == 2
    assert {"key", "shard", "affine", "fill"}.isdisjoint(tw.extra)


@pytest.mark.shared
def test_select(manifest):
    dev = select(manifest, split="dev")
    assert len(dev) == 737 and {s.split for s in dev} == {"dev"}
    both = select(manifest, source=["london", "essex94"])
    assert len(both) == 372
    london_happy = select(manifest, source="london", expression="happy")
    assert len(london_happy) == 40
    one = select(manifest, identity="london:001")
    assert [s.key for s in one] == ["london_001_happy", "london_001_neutral"]
    tw_dev = select(manifest, split="dev", source="taiwanese", expression={"sad", "angry"})
    assert len(tw_dev) == 16 + 24
    assert select(manifest) == list(manifest)
    with pytest.raises(MienError, match="unknown split val"):
        select(manifest, split="val")


# --- images and masks -----------------------------------------------------------------------------


@pytest.mark.shared
def test_image_decode_dev_and_train(faces, manifest):
    train = next(s for s in manifest if s.shard == "train-005.tar")
    for key in ["london_001_happy", train.key]:
        img = faces.image(key)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a photo, not a blank
    i = next(i for i, s in enumerate(faces.samples) if s.key == "london_001_happy")
    sample, img = faces[i]
    assert sample.key == "london_001_happy" and np.array_equal(img, faces.image(sample))


@pytest.mark.shared
def test_raw_photo(faces):
    raw = faces.raw_photo("london_001_happy")
    assert raw.dtype == np.uint8 and raw.ndim == 3 and max(raw.shape[:2]) <= 512
    assert not faces.has_raw_photo("cfp_451_01")
    with pytest.raises(MienError, match="cfp_451_01"):
        faces.raw_photo("cfp_451_01")


@pytest.mark.shared
def test_mask_reproduces_fill(faces, manifest):
    rng = random.Random(0)
    filled = [s for s in manifest if s.fill > 0]
    rows = (
        rng.sample([s for s in filled if s.source == "utkface"], 60)
        + rng.sample([s for s in filled if s.source == "cfp"], 60)
        + rng.sample(manifest, 80)
    )
    for s in rows:
        m = faces.mask(s)
        assert m.shape == (128, 128) and m.dtype == bool
        assert abs((1 - m.mean()) - s.fill) < 0.01, s.key


@pytest.mark.shared
def test_iter_images_reads_shard_by_shard(faces, manifest):
    rng = random.Random(1)
    subset = rng.sample(select(manifest, split="dev"), 20) + rng.sample(
        [s for s in manifest if s.shard == "train-005.tar"], 20
    )
    got = list(faces.iter_images(subset))
    assert sorted(s.key for s, _ in got) == sorted(s.key for s in subset)
    shards = [s.shard for s, _ in got]
    assert shards == sorted(shards)  # grouped, one pass per shard
    s, img = got[0]
    assert np.array_equal(img, faces.image(s))


def _child_read(faces, key, queue):
    queue.put(int(faces.image(key).sum()))


@pytest.mark.shared
def test_reads_after_fork(faces):
    expected = int(faces.image("london_001_neutral").sum())  # parent opens dev.tar first
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(faces, "london_001_neutral", queue))
    proc.start()
    assert queue.get(timeout=30) == expected
    proc.join(timeout=30)
    assert int(faces.image("london_001_neutral").sum()) == expected  # parent handle still good


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.shared
def test_truncated_shard_names_shard_and_key(data_dir, manifest, tmp_path):
    with open(data_dir / "dev.tar", "rb") as src, open(tmp_path / "dev.tar", "wb") as dst:
        dst.write(src.read(100_000))
    lines = (data_dir / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if '"dev.tar"' in line]
    _write_manifest(tmp_path, rows[:5])
    faces = Faces128(tmp_path)
    key = faces.samples[0].key
    with pytest.raises(MienError) as e:
        faces.image(key)
    assert "dev.tar" in str(e.value) and key in str(e.value) and "re-copy" in str(e.value)


@pytest.mark.shared
def test_missing_member_and_missing_shard(data_dir, tmp_path):
    with tarfile.open(data_dir / "dev.tar") as tar:
        first = tar.next()
        data = tar.extractfile(first).read()
    key = first.name.removesuffix(".webp")
    _write_tar(tmp_path / "dev.tar", {first.name: data})
    _write_manifest(
        tmp_path,
        [_row(key, "dev.tar"), _row("london_999_happy", "dev.tar"), _row("utk_x", "train-000.tar")],
    )
    faces = Faces128(tmp_path)
    assert faces.image(key).shape == (128, 128, 3)
    with pytest.raises(MienError, match=r"dev\.tar has no member london_999_happy\.webp"):
        faces.image("london_999_happy")
    with pytest.raises(MienError, match=r"shard train-000\.tar \(holding utk_x\) not found"):
        faces.image("utk_x")
    with pytest.raises(MienError, match="no sample 'nobody'"):
        faces.image("nobody")


def test_corrupt_image_names_shard_and_key(tmp_path):
    _write_tar(tmp_path / "dev.tar", {"london_001_happy.webp": b"RIFF\0\0\0\0WEBPnot really"})
    _write_manifest(tmp_path, [_row("london_001_happy", "dev.tar")])
    with pytest.raises(MienError, match=r"london_001_happy\.webp in dev\.tar cannot be decoded"):
        Faces128(tmp_path).image("london_001_happy")


def test_malformed_manifest_line_is_named(tmp_path):
    _write_manifest(tmp_path, [_row("a", "dev.tar"), _row("b", "dev.tar"), '{"key": "c", '])
    with pytest.raises(MienError, match=r"manifest\.jsonl line 3: not valid JSON"):
        load_manifest(tmp_path)
    _write_manifest(tmp_path, [_row("a", "dev.tar"), {"key": "b"}])
    with pytest.raises(MienError, match=r"line 2: not a faces128 sample .*missing field"):
        load_manifest(tmp_path)
    with pytest.raises(MienError, match="manifest.jsonl not found"):
        load_manifest(tmp_path / "nowhere")


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(F.ENV_VAR, str(tmp_path))
    assert F.default_data_dir() == tmp_path
    monkeypatch.setenv(F.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(MienError, match="MIEN_DATA"):
        F.default_data_dir()
    monkeypatch.delenv(F.ENV_VAR)
    monkeypatch.setattr(F, "_checkout_data_dir", lambda: tmp_path / "no-shared")
    with pytest.raises(MienError, match="set MIEN_DATA"):
        F.default_data_dir()


def test_pickled_view_reads_without_inherited_handles(tmp_path):
    import pickle

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (10, 200, 30)).save(buf, "WEBP", quality=90)  # synthetic, no face
    _write_tar(tmp_path / "dev.tar", {"london_001_happy.webp": buf.getvalue()})
    _write_manifest(tmp_path, [_row("london_001_happy", "dev.tar")])
    faces = Faces128(tmp_path)
    faces.image("london_001_happy")
    clone = pickle.loads(pickle.dumps(faces))
    assert clone._files == {}
    assert np.abs(clone.image("london_001_happy").astype(int) - [10, 200, 30]).max() < 8
