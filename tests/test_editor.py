"""The library workflow (mien.edit.Editor): mechanics on tiny random components, no ../shared."""

import threading
import time

import numpy as np
import pytest
from conftest import tiny_aligned, tiny_components_pipeline

from mien.cli.analyze import example_path
from mien.edit import Editor, SerialLandmarker
from mien.expression.targets import ExpressionRequest, parse_request
from mien.io.image import load_rgb
from mien.settings import GenerationSettings as S


@pytest.fixture(scope="module")
def photo():
    return load_rgb(example_path())  # a London Set photo (CC BY 4.0, see the README)


@pytest.fixture(scope="module")
def subject(editor, photo):
    return editor.subject([photo], tiny_aligned(photo))


# (request, settings, n): FlowEdit with every guidance kind on, and sdedit with a second-order sampler
JOBS = [(ExpressionRequest(mix={"fearful": 1.0}), S(steps=3, recogniser_guidance_until=1.0, blendshape_guidance_until=1.0), 2),
        (ExpressionRequest(mix={"happy": 0.5}, aus={"AU26": 2.0}), S(steps=3, method="sdedit", sampler="heun"), 1)]


def test_two_threads_through_one_editor_match_sequential_calls(editor, subject):
    """A service: requests served at once from two threads give exactly the images of one-at-a-time calls."""
    sequential = [editor.edit(subject, req, s, n=n, seed=5) for req, s, n in JOBS]
    start, results = threading.Barrier(len(JOBS)), [None] * len(JOBS)

    def serve(i):
        req, s, n = JOBS[i]
        start.wait()
        results[i] = editor.edit(subject, req, s, n=n, seed=5)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(len(JOBS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seq, par in zip(sequential, results):
        assert len(par.crops) == len(seq.crops)
        for a, b in zip(seq.crops + seq.photos, par.crops + par.photos):
            assert np.array_equal(a, b)
        assert par.metadata == seq.metadata


def test_edit_pastes_each_face_into_the_photo_and_records_how_it_was_made(editor, subject, photo):
    req = parse_request("angry", intensity=0.5)
    result = editor.edit(subject, req, S(steps=2), n=2, seed=3)
    assert [p.shape for p in result.photos] == [photo.shape] * 2 and result.crops[0].shape == (128, 128, 3)
    # the background is kept: the photo's corners are untouched, the face region is not
    assert np.array_equal(result.photos[0][:20, :20], photo[:20, :20])
    assert not np.array_equal(result.photos[0], photo)
    meta = result.metadata[1]
    assert meta["seed"] == 4 and meta["request"] == req.describe() and meta["face"] == 0
    assert meta["model_hash"] == editor.model_hash and meta["guidance_contrast"] == 1.5  # resolved: angry's policy
    assert editor.edit(subject, req, S(steps=1), paste=False).photos is None


def test_a_vocabulary_term_is_saved_with_its_recipe_in_the_images_and_on_the_sheet(editor, subject, tmp_path):
    """--expression elation was saved only as its recipe ("happy 1.00, surprised 0.20"): the word typed appeared
    neither in the PNG metadata nor on the sheet. Both keep it beside the recipe, scaled; --au values follow."""
    from mien.io.output import save_result
    from mien.io.provenance import read_provenance

    result = editor.edit(subject, parse_request("elation"), S(steps=1), seed=0)
    paths = save_result(tmp_path, result)
    assert [p.name for p in paths] == ["000_seed0.png", "000_seed0_photo.png", "sheet.png"]
    for path in paths:  # the sheet's title is its record's request
        assert read_provenance(path).record["request"] == "elation (happy 1.00, surprised 0.20)"
    assert parse_request("elation", 0.5, "AU12=3").describe() == "elation (happy 0.50, surprised 0.10), AU12=3"
    assert parse_request("happily surprised").describe() == "happily surprised (happy 0.60, surprised 0.60)"
    # a label or a typed recipe says no more than its numbers, so it is not repeated
    assert parse_request("happy 0.6").describe() == "happy 0.60"
    assert parse_request("happy:0.5+AU6:2", au="AU6=3").describe() == "happy 0.50, AU6=3"


def test_the_paste_step_is_one_replaceable_function(photo, subject):
    calls = []

    def paste(photo_, face, matrix, keep):
        calls.append((photo_.shape, face.shape, matrix.shape, keep))
        return np.zeros_like(photo_)

    ed = Editor(tiny_components_pipeline(), paste=paste)
    result = ed.edit(subject, ExpressionRequest(mix={"happy": 1.0}), S(steps=1, keep="none"), n=2)
    assert calls == [(photo.shape, (128, 128, 3), (2, 3), "none")] * 2 and not result.photos[0].any()

    def paste_with_landmarks(photo_, face, matrix, keep, landmarks=None):
        calls.append(landmarks)
        return photo_

    Editor(tiny_components_pipeline(), paste=paste_with_landmarks).edit(subject, ExpressionRequest(mix={"happy": 1.0}),
                                                                        S(steps=1), n=1)  # fmt: skip
    assert calls[-1] is subject.landmarks and calls[-1].shape == (478, 3)

    def paste_with_reconstruction(photo_, face, matrix, keep, landmarks=None, reconstruction=None):
        calls.append(reconstruction)
        return photo_

    ed = Editor(tiny_components_pipeline(), paste=paste_with_reconstruction)
    ed.edit(subject, ExpressionRequest(mix={"happy": 1.0}), S(steps=1), n=1)
    # the decoder's reconstruction of the unedited crop: the subject's latent decoded (DetailSettings.reference)
    assert calls[-1].shape == (128, 128, 3) and calls[-1].dtype == np.uint8
    assert np.array_equal(calls[-1], ed.pipeline.reconstruction(subject.identity))


def test_the_default_paste_keeps_the_photo_outside_the_face_oval(editor, subject, photo):
    """Detail transfer (the default paste): everything outside the feathered face oval is the photo bit for bit."""
    from mien.detail import FACE_OVAL

    out = editor.edit(subject, parse_request("surprised"), S(steps=2), n=1).photos[0]
    oval = subject.landmarks[list(FACE_OVAL), :2]
    (x0, y0), (x1, y1) = oval.min(axis=0), oval.max(axis=0)
    pad = 0.25 * (x1 - x0)  # the oval, grown and feathered, stays well inside its box grown by a quarter
    outside = np.ones(photo.shape[:2], bool)
    outside[max(int(y0 - pad), 0):int(y1 + pad), max(int(x0 - pad), 0):int(x1 + pad)] = False
    assert np.array_equal(out[outside], photo[outside])
    assert not np.array_equal(out, photo)


def test_landmarker_calls_are_serialised():
    """MediaPipe's landmarker is called by one thread at a time through an editor."""
    overlaps = []

    class SlowLandmarker:
        active = 0

        def detect(self, rgb, max_faces=None):
            SlowLandmarker.active += 1
            overlaps.append(SlowLandmarker.active)
            time.sleep(0.02)
            SlowLandmarker.active -= 1
            return []

    lm = SerialLandmarker(SlowLandmarker())
    threads = [threading.Thread(target=lm.detect, args=(None,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1, 1]


@pytest.mark.shared
def test_face_index_beyond_the_faces_found_is_a_one_line_error(shared_dir, photo):
    from mien.errors import NoFaceError
    from mien.face.landmarker import FaceLandmarker
    from mien.pipeline import align_photos

    with FaceLandmarker(num_faces=2) as lm:
        assert len(align_photos(lm, [photo], face=0).crops) == 1
        with pytest.raises(NoFaceError, match="face 1 asked for, but only 1 found"):
            align_photos(lm, [photo], ["me.jpg"], face=1)


def test_prepare_reuses_the_subject_of_the_same_photos(photo):
    """Asked again for photos with the same pixels, prepare gives the same subject without aligning again (the
    caller's own array as the photo); changed pixels, or photos pushed out by newer ones, are prepared anew."""
    ed = Editor(tiny_components_pipeline())
    calls = []

    def align(photos, names=None, face=0):
        calls.append(len(photos))
        return tiny_aligned(photos[0])

    ed.align = align
    first = ed.prepare([photo])
    again = photo.copy()
    second = ed.prepare([again])
    assert len(calls) == 1 and second.photo is again
    assert np.array_equal(second.identity.vector, first.identity.vector) and second.matrix is first.matrix
    changed = photo.copy()
    changed[0, 0] ^= 1
    ed.prepare([changed])
    assert len(calls) == 2
    for k in range(Editor.PREPARED_KEPT):
        other = photo.copy()
        other[1, 1] = (int(other[1, 1, 0]) + k + 1) % 256
        ed.prepare([other])
    ed.prepare([photo])
    assert len(calls) == 3 + Editor.PREPARED_KEPT
