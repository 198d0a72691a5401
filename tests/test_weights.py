"""The weights module: lookup order, checksum verification, helpful errors, and --download
against a local HTTP server (never the internet)."""

import dataclasses
import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from mien import weights as W
from mien.cli.main import main
from mien.errors import WeightsError


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No MIEN_WEIGHTS, an empty cache, and no ../shared fallback."""
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_checkout_shared", lambda: None)
    W._VERIFIED.clear()
    return tmp_path


def test_missing_file_says_which_where_and_origin(isolated):
    with pytest.raises(WeightsError) as e:
        W.locate("mobilefacenet")
    msg = str(e.value)
    assert "mobilefacenet/MobileFaceNet.tflite" in msg
    assert W.ENV_VAR in msg and "mien weights --download" in msg
    assert W.FILES["mobilefacenet"].url in msg
    assert "\n" not in msg


def test_env_var_takes_priority_and_bad_checksum_is_refused(isolated, monkeypatch):
    d = isolated / "w"
    (d / "taef2").mkdir(parents=True)
    (d / "taef2" / "taef2_encoder.pth").write_bytes(b"not the weights")
    monkeypatch.setenv(W.ENV_VAR, str(d))
    with pytest.raises(WeightsError, match="wrong SHA256"):
        W.locate("taef2_encoder")
    assert [s.state for s in W.status(["taef2_encoder"])] == ["bad checksum"]


@pytest.mark.shared
def test_shared_weights_verify(shared_dir, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(shared_dir / "weights"))
    for s in W.status():
        assert s.state == "ok", s


@pytest.fixture
def http_server(shared_dir, tmp_path):
    """Serves a copy of shared/weights over loopback HTTP, one file deliberately corrupted."""
    root = tmp_path / "www"
    shutil.copytree(shared_dir / "weights", root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


@pytest.mark.shared
def test_download_fetches_verifies_and_is_found(isolated, http_server):
    root, base = http_server
    got = W.download(["mobilefacenet", "faceapi_expression"], url_for=lambda wf: base + wf.path)
    assert all(p.is_file() for p in got)
    assert W.locate("mobilefacenet") == W.cache_dir() / "mobilefacenet/MobileFaceNet.tflite"


@pytest.mark.shared
def test_download_rejects_a_changed_remote_file_and_leaves_nothing(isolated, http_server):
    root, base = http_server
    (root / "taef2" / "taef2_decoder.pth").write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="does not match"):
        W.download(["taef2_decoder"], url_for=lambda wf: base + wf.path)
    assert not list((W.cache_dir() / "taef2").glob("*"))


def test_download_unreachable_is_one_line(isolated):
    with pytest.raises(WeightsError, match="could not download"):
        W.download(["taef2_decoder"], url_for=lambda wf: "http://127.0.0.1:9/" + wf.path)


def test_cli_weights_lists_status(isolated, capsys):
    assert main(["weights"]) == 3
    out, err = capsys.readouterr()
    assert "missing" in out and "mobilefacenet/MobileFaceNet.tflite" in out
    assert "--download" in err


def test_task_bundle_accepted_by_inner_members(isolated, shared_dir, monkeypatch):
    """A re-zipped MediaPipe bundle (different outer bytes, same inner models) still verifies."""
    import zipfile

    src = shared_dir / "weights" / "mediapipe" / "face_landmarker.task"
    d = isolated / "w" / "mediapipe"
    d.mkdir(parents=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(d / "face_landmarker.task", "w", zipfile.ZIP_DEFLATED) as zout:
        for n in zin.namelist():
            zout.writestr(n, zin.read(n))
    monkeypatch.setenv(W.ENV_VAR, str(isolated / "w"))
    assert W.locate("face_landmarker") == d / "face_landmarker.task"


def test_download_fetches_only_what_no_searched_folder_holds(monkeypatch, capsys):
    """`mien weights --download` fetched every file into the cache, those found elsewhere (../shared/weights,
    $MIEN_WEIGHTS) too."""
    fetched = []
    rows = [W.Status(name, W.FILES[name].path, "missing" if name == "taef2_decoder" else "ok", "x") for name in W.FILES]
    monkeypatch.setattr(W, "status", lambda names=None: rows)
    monkeypatch.setattr(W, "download", lambda names=None, **kw: fetched.append(names) or [])
    main(["weights", "--download"])
    assert fetched == [["taef2_decoder"]]
    rows[:] = [dataclasses.replace(r, state="ok") for r in rows]
    assert main(["weights", "--download"]) == 0 and fetched == [["taef2_decoder"]]  # nothing missing: no fetch
    capsys.readouterr()
