"""`mien data pack`: chunks cut along people, every sample once, SHA256SUMS, and the chunk reader.

Everything is built under tmp_path from a small fake pool (a faces128-style manifest and tar shard
of synthetic WebP noise images, plus an annotation sidecar of random vectors), so no face data is
read or written and nothing here needs ../shared. The checks are invariants of the packing (no
person split, every kept sample exactly once, the size limit), not a particular chunk order.
"""

import dataclasses
import hashlib
import io
import json
import tarfile
from contextlib import redirect_stdout

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mien.cli.main import main
from mien.data.faces128 import Sample
from mien.checksums import failures
from mien.data.pack import NPZ_OVERHEAD, _chunks_by_person, read_chunk
from mien.data.training_view import TrainingView



# --- _chunks_by_person on hand-made views ---------------------------------------------------------

def _view(group) -> TrainingView:
    group = np.asarray(group, dtype=np.int64)
    n = len(group)
    _, inv, counts = np.unique(group, return_inverse=True, return_counts=True)
    samples = [Sample(key=f"s{i:04d}", shard="train-000.tar", split="train", source="celeba",
                      identity=f"celeba:{g}", expression=None, affine=((1, 0, 0), (0, 1, 0)),
                      src_size=(128, 128), fill=0.0) for i, g in enumerate(group)]
    rng = np.random.default_rng(1)
    return TrainingView(samples, rng.normal(size=(n, 128)).astype(np.float32),
                        rng.normal(size=(n, 55)).astype(np.float32), group, counts[inv] == 1)


def check_chunks(chunks, group, sizes, max_bytes):
    """The packing invariants, whatever order people are taken in."""
    group, sizes = np.asarray(group), np.asarray(sizes)
    assert all(len(c) for c in chunks), "empty chunk"
    every = np.concatenate(chunks)
    assert np.array_equal(np.sort(every), np.arange(len(group))), "a sample is missing or repeated"
    owner = {}
    for c, idx in enumerate(chunks):
        for g in np.unique(group[idx]):
            assert owner.setdefault(int(g), c) == c, f"person {g} is split over chunks {owner[int(g)]} and {c}"
        if sizes[idx].sum() > max_bytes:  # allowed only for one person who alone exceeds the limit
            assert len(np.unique(group[idx])) == 1, f"chunk {c} is over the limit with several people in it"


@pytest.mark.parametrize("seed", range(6))
def test_chunks_by_person_random_pools(seed):
    rng = np.random.default_rng(seed)
    n_people = int(rng.integers(1, 60))
    photos = rng.choice([1, 1, 1, 2, 3, 8, 20], size=n_people)  # singletons and multi-photo people
    ids = rng.choice(10**6, size=n_people, replace=False)  # sparse, unsorted person ids
    group = rng.permutation(np.repeat(ids, photos))
    sizes = rng.integers(500, 9000, size=len(group))
    for max_bytes in (5_000, 40_000, int(sizes.sum()) + 1):
        chunks = _chunks_by_person(_view(group), sizes, max_bytes)
        check_chunks(chunks, group, sizes, max_bytes)
    assert len(_chunks_by_person(_view(group), sizes, int(sizes.sum()) + 1)) == 1


def test_oversize_person_is_kept_whole_and_alone():
    group = np.array([7] * 10 + [1, 2, 3, 4] + [9, 9])
    sizes = np.array([1000] * 10 + [100] * 4 + [200, 200])
    chunks = _chunks_by_person(_view(group), sizes, max_bytes=3000)
    check_chunks(chunks, group, sizes, 3000)
    big = [c for c in chunks if 7 in group[c]]
    assert len(big) == 1 and set(group[big[0]]) == {7} and len(big[0]) == 10


def test_all_singletons_fill_chunks_to_the_limit():
    group = np.arange(100)
    sizes = np.full(100, 1000)
    chunks = _chunks_by_person(_view(group), sizes, max_bytes=10_000)
    check_chunks(chunks, group, sizes, 10_000)
    assert sorted(len(c) for c in chunks) == [10] * 10


def test_first_people_lead_the_chunks_and_the_rest_keep_their_order():
    rng = np.random.default_rng(3)
    group = rng.permutation(np.repeat(np.arange(30), rng.choice([1, 2, 4], size=30)))
    sizes = rng.integers(500, 3000, size=len(group))
    first = np.isin(group, [4, 11, 25])  # these people's images
    plain = _chunks_by_person(_view(group), sizes, 8000)
    led = _chunks_by_person(_view(group), sizes, 8000, first)
    check_chunks(led, group, sizes, 8000)
    people = [int(g) for c in led for g in dict.fromkeys(group[c])]  # people in chunk order
    assert set(people[:3]) == {4, 11, 25}
    assert people[3:] == [int(g) for c in plain for g in dict.fromkeys(group[c]) if g not in (4, 11, 25)]


def test_first_names_an_unknown_source_in_one_line():
    from mien.data.pack import _first_mask
    from mien.errors import MienError

    view = _view([1, 1, 2])
    view.samples[0] = dataclasses.replace(view.samples[0], key="tw_2011a01")
    assert _first_mask(view, ("taiwanese",)).tolist() == [True, False, False]
    with pytest.raises(MienError, match="--first lag: no such source"):
        _first_mask(view, ("lag",))


# --- read_chunk on a hand-made chunk --------------------------------------------------------------

def test_read_chunk_round_trip(tmp_path):
    blobs = [b"RIFF-one", b"", b"\x00\x01\x02" * 50, b"last"]
    cond = {"webp": np.frombuffer(b"".join(blobs), dtype=np.uint8),
            "offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
            "key": np.array(["a", "b", "c", "d"]), "group": np.array([3, 3, 5, 8]),
            "identity": np.arange(4 * 128, dtype=np.float16).reshape(4, 128)}
    np.savez(tmp_path / "chunk.npz", **cond)
    got, webp = read_chunk(tmp_path / "chunk.npz")
    assert webp == blobs
    assert set(got) == {"key", "group", "identity"}
    assert list(got["key"]) == ["a", "b", "c", "d"] and got["identity"].dtype == np.float16
    np.testing.assert_array_equal(got["identity"], cond["identity"])


# --- the whole command on a fake pool -------------------------------------------------------------

MAX_MB = 0.03  # 30 kB chunks, so a few dozen small images make several chunks


def _webp(rng, noisy: float) -> bytes:
    """A 128x128 WebP: flat grey with a noise patch whose size sets the file size (~1-10 kB)."""
    img = np.full((128, 128, 3), 120, np.uint8)
    side = int(128 * noisy)
    img[:side, :side] = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A faces128-style folder + annotations. People: multi-photo ids, UTKFace-style photos without an
    identity (each its own person), one person too big for any chunk; plus rows pack must leave out."""
    d = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    rows, members = [], {}

    def add(key, identity, source="celeba", split="train", noisy=None):
        shard = "dev.tar" if split == "dev" else "train-000.tar"
        rows.append({"key": key, "shard": shard, "split": split, "source": source, "identity": identity,
                     "affine": [[0.5, 0.0, 3.0], [0.0, 0.5, 4.0]], "src_size": [256, 300], "fill": 0.0})
        members.setdefault(shard, {})[f"{key}.webp"] = _webp(rng, rng.uniform(0.1, 0.5) if noisy is None else noisy)

    for p in range(12):
        for i in range(int(rng.integers(2, 6))):
            add(f"celeba_{p:02d}_{i}", f"celeba:{p}")
    for i in range(25):
        add(f"utkface_{i:03d}", None, source="utkface")
    for i in range(6):
        add(f"big_{i}", "cfp:big", source="cfp", noisy=0.9)  # ~6 x 9 kB: more than one chunk
    for i in range(2):  # LAG keys are file names of up to 112 characters
        add(f"lag_a_very_long_celebrity_photo_file_name_as_in_the_large_age_gap_set_2012_{i:03d}_1", f"lag:{i}",
            source="lag")
    add("dev_0", "celeba:0", split="dev")  # other split: not packed
    add("not_annotated", "celeba:1")  # no annotation row: not packed
    add("mediapipe_failed", "celeba:2")  # ok=False: not packed
    add("no_descriptor", "celeba:3")  # NaN identity vector: not packed
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for shard, files in members.items():
        with tarfile.open(d / shard, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    keys = [r["key"] for r in rows if r["key"] != "not_annotated"]
    n = len(keys)
    faceapi = rng.normal(size=(n, 128)).astype(np.float32)
    faceapi[keys.index("no_descriptor")] = np.nan
    ann = {"key": keys, "ok": [k != "mediapipe_failed" for k in keys],
           "blendshapes": rng.uniform(size=(n, 52)).astype(np.float32), "faceapi": faceapi,
           "yaw": rng.normal(size=n).astype(np.float32), "pitch": rng.normal(size=n).astype(np.float32),
           "roll": rng.normal(size=n).astype(np.float32)}
    table = pa.table({k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
                      if isinstance(v, np.ndarray) and v.ndim == 2 else v for k, v in ann.items()})
    pq.write_table(table, d / "annotations.parquet")
    left_out = {"not_annotated", "mediapipe_failed", "no_descriptor"}
    expected = {r["key"] for r in rows if r["split"] == "train"} - left_out
    person = {r["key"]: r["identity"] or f"single:{r['key']}" for r in rows}
    webp = {name[:-5]: data for files in members.values() for name, data in files.items()}
    row = {k: i for i, k in enumerate(keys)}
    return {"dir": d, "annotations": d / "annotations.parquet", "expected": expected, "person": person,
            "webp": webp, "ann": ann, "row": row}


@pytest.fixture(scope="module")
def packed(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    capture = io.StringIO()
    with redirect_stdout(capture):
        code = main(["data", "pack", "--annotations", str(pool["annotations"]), "--out", str(out),
                     "--data", str(pool["dir"]), "--max-mb", str(MAX_MB)])
    assert code == 0
    meta = json.loads((out / "pack.json").read_text())
    chunks = {e["file"]: read_chunk(out / e["file"]) for e in meta["chunks"]}
    return {"out": out, "meta": meta, "chunks": chunks, "stdout": capture.getvalue()}


def test_every_kept_sample_packed_exactly_once(pool, packed):
    keys = [k for cond, _ in packed["chunks"].values() for k in cond["key"]]
    assert len(keys) == len(set(keys))
    assert set(keys) == pool["expected"]
    assert packed["meta"]["images"] == len(pool["expected"]) == sum(e["images"] for e in packed["meta"]["chunks"])


def test_no_person_spans_two_chunks(pool, packed):
    assert len(packed["chunks"]) >= 4  # the limit really cut the pool
    owner = {}
    for name, (cond, _) in packed["chunks"].items():
        for key in cond["key"]:
            who = pool["person"][key]
            assert owner.setdefault(who, name) == name, f"{who} is in {owner[who]} and {name}"
        people = {pool["person"][k] for k in cond["key"]}
        assert len(np.unique(cond["group"])) == len(people)  # one group id per person
        entry = next(e for e in packed["meta"]["chunks"] if e["file"] == name)
        assert entry["people"] == len(people) and entry["images"] == len(cond["key"])
    # Group ids are global: the same id never names two people in different chunks.
    gid = {}
    for cond, _ in packed["chunks"].values():
        for key, g in zip(cond["key"], cond["group"]):
            assert gid.setdefault(int(g), pool["person"][key]) == pool["person"][key]


def test_chunk_files_respect_the_size_limit(pool, packed):
    """The limit holds for the files themselves (--max-mb is what a GPU call can carry), even with the
    pool's 112-character LAG keys stored at fixed width; only one person larger than it may exceed it."""
    limit = int(MAX_MB * 1e6)
    for name, (cond, webp) in packed["chunks"].items():
        if (packed["out"] / name).stat().st_size > limit:
            assert len({pool["person"][k] for k in cond["key"]}) == 1, f"{name} is over the limit with several people"
    big = [name for name, (cond, _) in packed["chunks"].items() if any(k.startswith("big_") for k in cond["key"])]
    assert len(big) == 1
    assert {pool["person"][k] for k in packed["chunks"][big[0]][0]["key"]} == {"cfp:big"}


def test_size_model_is_exact_up_to_the_npz_headers(packed):
    """Chunks are cut on the bytes of their arrays (WebP + conditions per image) + NPZ_OVERHEAD; the
    headers must fit in that allowance, or a full chunk's file would exceed --max-mb."""
    for name, (cond, webp) in packed["chunks"].items():
        real = (packed["out"] / name).stat().st_size
        offsets = 8 * (len(webp) + 1)  # int64, popped by read_chunk
        model = sum(len(b) for b in webp) + offsets + sum(a.nbytes for a in cond.values())
        assert model <= real <= model + NPZ_OVERHEAD, (name, real, model)


def test_chunk_contents_match_the_pool(pool, packed):
    ann, row = pool["ann"], pool["row"]
    for cond, webp in packed["chunks"].values():
        for i, key in enumerate(cond["key"]):
            assert webp[i] == pool["webp"][key]  # original bytes, not re-encoded
            r = row[key]
            f = ann["faceapi"][r]
            np.testing.assert_allclose(cond["identity"][i], f / np.linalg.norm(f), atol=2e-3)
            np.testing.assert_allclose(cond["expression"][i][:52], ann["blendshapes"][r], atol=2e-3)
            np.testing.assert_allclose(cond["expression"][i][52:], [ann[a][r] / 90 for a in ("yaw", "pitch", "roll")],
                                       atol=2e-3)
            np.testing.assert_allclose(cond["affine"][i], [[0.5, 0.0, 3.0], [0.0, 0.5, 4.0]])
            assert tuple(cond["src_size"][i]) == (256, 300)
        Image.open(io.BytesIO(webp[0])).verify()
        for key, self_ref in zip(cond["key"], cond["self_ref"]):
            alone = sum(pool["person"][k] == pool["person"][key] for k in pool["expected"]) == 1
            assert bool(self_ref) == alone, key


def test_pack_json_and_cli_summary(packed):
    meta, out = packed["meta"], packed["out"]
    assert sorted(p.name for p in out.glob("*.npz")) == sorted(e["file"] for e in meta["chunks"])
    for e in meta["chunks"]:
        assert e["bytes"] == (out / e["file"]).stat().st_size
    assert not list(out.glob(".*.tmp"))
    assert meta["self_ref"] == sum(int(c["self_ref"].sum()) for c, _ in packed["chunks"].values())
    lines = packed["stdout"].strip().splitlines()
    assert len(lines) == len(meta["chunks"]) + 1
    assert lines[-1].startswith(f"{meta['images']} images in {len(meta['chunks'])} chunks")


def test_sha256sums_verify_and_catch_corruption(packed, tmp_path):
    out = packed["out"]
    sums = {}
    for line in (out / "SHA256SUMS").read_text().splitlines():
        h, name = line.split("  ", 1)
        sums[name] = h
    assert set(sums) == {e["file"] for e in packed["meta"]["chunks"]}
    for name, h in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == h
    assert failures(out / "SHA256SUMS") == []

    copy = tmp_path / "copy"
    copy.mkdir()
    for p in out.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    names = sorted(sums)
    data = bytearray((copy / names[0]).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (copy / names[0]).write_bytes(bytes(data))
    (copy / names[1]).write_bytes((copy / names[1]).read_bytes()[:-10])  # truncated
    (copy / names[2]).unlink()  # missing
    assert sorted(failures(copy / "SHA256SUMS")) == sorted(names[:3])


def test_pack_without_annotations_is_a_one_line_error(pool, tmp_path, capsys):
    code = main(["data", "pack", "--annotations", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "o"),
                 "--data", str(pool["dir"])])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mien annotate" in err


def test_chunks_become_training_tensors_through_a_safetensors_cache(packed, tmp_path):
    """mien train's data path: every chunk of a pack is encoded once (here by a cheap stand-in encoder), cached as
    safetensors and read back identical; people stay together as identity references; faces for the decoder
    fine-tune cache the same way. Nothing is unpickled (tests/test_train_cli.py checks the source)."""
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from mien.train.jobs import decoder_images, pack_chunks
    from mien.train.latents import load_chunks

    chunks = pack_chunks(packed["out"])
    assert [c.name for c in chunks] == [e["file"] for e in packed["meta"]["chunks"]]
    # TAEF2's interface (B, 3, 128, 128) -> (B, 32, 16, 16); the real encoder is tested in test_taef2.py
    taef2 = SimpleNamespace(encode=lambda x: F.avg_pool2d(x, 8).repeat(1, 11, 1, 1)[:, :32])
    first, info = load_chunks(chunks, tmp_path / "cache", taef2, "cpu")
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == sorted(c.stem + ".latents.safetensors" for c in chunks)
    again, _ = load_chunks(chunks, tmp_path / "cache", None, "cpu")  # no encoder: must come from the cache
    assert torch.equal(first.latents, again.latents) and torch.equal(first.identity, again.identity)
    assert info["images"] == len(first) == sum(len(cond["key"]) for cond, _ in packed["chunks"].values())
    groups = np.concatenate([cond["group"] for cond, _ in packed["chunks"].values()])
    for i, refs in enumerate(first.ref_candidates):
        assert (groups[refs] == groups[i]).all()
    faces = decoder_images(chunks, tmp_path / "faces")
    assert faces["images"].dtype == torch.uint8 and faces["images"].shape == (len(first), 3, 128, 128)
    assert torch.equal(decoder_images(chunks, tmp_path / "faces")["masks"], faces["masks"])
