"""mien.checksums: sha256sum's format written byte for byte, read back, and checked."""

import hashlib

from mien import checksums as C


def test_written_lines_are_sha256sums_own(tmp_path):
    (tmp_path / "a b.bin").write_bytes(b"x" * (C.CHUNK + 7))  # more than one chunk; a name with a space
    (tmp_path / "c.bin").write_bytes(b"")
    digests = C.write_sums(tmp_path / "SUMS", ["a b.bin", "c.bin"])
    want = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a b.bin", "c.bin")}
    assert digests == want
    assert (tmp_path / "SUMS").read_text() == f"{want['a b.bin']}  a b.bin\n{want['c.bin']}  c.bin\n"
    assert C.read_sums(tmp_path / "SUMS") == want and C.failures(tmp_path / "SUMS") == []


def test_reading_takes_binary_mode_upper_case_and_blank_lines(tmp_path):
    (tmp_path / "SUMS").write_text("ABC *x.bin\n\ndef  y z\n")
    assert C.read_sums(tmp_path / "SUMS") == {"x.bin": "abc", "y z": "def"}


def test_failures_name_changed_and_missing_files(tmp_path):
    for n in "abc":
        (tmp_path / n).write_bytes(n.encode())
    C.write_sums(tmp_path / "SUMS", ["a", "b", "c"])
    (tmp_path / "a").write_bytes(b"changed")
    (tmp_path / "b").unlink()
    assert C.failures(tmp_path / "SUMS") == ["a", "b"]


def test_a_sidecar_records_the_file_beside_it(tmp_path):
    path = tmp_path / "w.safetensors"
    assert C.recorded_sha256(path) is None
    path.write_bytes(b"weights")
    digest = C.write_sidecar(path)
    assert C.sidecar(path) == tmp_path / "w.safetensors.sha256"
    assert C.sidecar(path).read_text() == f"{digest}  w.safetensors\n" and C.recorded_sha256(path) == digest
    C.sidecar(path).write_text("")
    assert C.recorded_sha256(path) == ""
