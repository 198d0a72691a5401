"""`mien ui` in a real browser: headless Chromium (Debian's chromium + chromium-driver) through Selenium opens
the page, uploads the bundled example photo, picks a label and moves an AU slider, generates, and checks that
the result appears and that the downloaded file carries mien's metadata for that request. Screenshots of
each step go to $MIEN_UI_SCREENSHOTS when set (docs/ui/ holds the README's, from
``MIEN_UI_SCREENSHOTS=docs/ui MIEN_UI_TEST_STEPS=25 pytest tests/test_ui_browser.py``); otherwise into the test's tmp folder."""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.shared

STEPS = int(os.environ.get("MIEN_UI_TEST_STEPS", "3"))  # few steps: the test checks the page, not the image
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(shared_dir, tmp_path_factory):
    pytest.importorskip("gradio", reason="the ui extra is not installed (pip install -e '.[ui]')")
    from mien.ui.app import launch
    from mien.ui.service import Service

    service = Service.from_pretrained(workdir=tmp_path_factory.mktemp("ui-results"))
    port = _free_port()
    demo = launch(service, "127.0.0.1", port, steps=STEPS, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    service.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium "
                    "chromium-driver; .ci/run does it when it can)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the ui extra)")
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    from selenium.webdriver.chrome.service import Service as DriverService

    drv = webdriver.Chrome(service=DriverService(DRIVER), options=opts)
    drv.downloads = downloads
    yield drv
    drv.quit()


def _wait(drv, cond, timeout=60, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # elements re-render while Gradio updates them
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; status: {_text(drv, 'status')!r}")


def _text(drv, elem_id):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, elem_id).text


def _set_number(drv, elem_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = drv.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def _click_choice(drv, elem_id, text):
    from selenium.webdriver.common.by import By

    for lab in drv.find_elements(By.CSS_SELECTOR, f"#{elem_id} label"):
        if lab.text.strip() == text:
            lab.click()
            return
    raise AssertionError(f"no choice {text!r} in #{elem_id}")


def test_page_uploads_generates_and_downloads_a_marked_image(server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    from mien.cli.analyze import example_path
    from mien.io.provenance import read_provenance

    shots = Path(os.environ.get("MIEN_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    drv = browser
    drv.get(server)
    _wait(drv, lambda: "Upload a photo" in _text(drv, "status"), what="the page")
    drv.save_screenshot(str(shots / "1_page.png"))

    drv.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys(str(example_path()))
    _wait(drv, lambda: "1 face found" in _text(drv, "status"), what="the face list")
    assert drv.find_elements(By.CSS_SELECTOR, "#faces img"), "the detected face is not shown"
    drv.save_screenshot(str(shots / "2_faces.png"))

    _click_choice(drv, "label", "happy")
    _wait(drv, lambda: "happy" in _text(drv, "recipe"), what="the label's recipe")
    _wait(drv, lambda: float(drv.find_element(By.CSS_SELECTOR, "#au_AU12L input[type=number]").get_attribute("value")) > 0,
          what="the AU sliders' preset")  # happy presets the smile sliders
    _set_number(drv, "au_AU12L", 4.5)  # a lopsided smile: the person's left corner higher
    _set_number(drv, "seed", 7)
    drv.save_screenshot(str(shots / "3_expression.png"))

    drv.find_element(By.ID, "generate").click()
    _wait(drv, lambda: "done" in _text(drv, "status"), timeout=300, what="the result")
    assert drv.find_elements(By.CSS_SELECTOR, "#result img"), "no result image in the page"
    assert "Identity" in _text(drv, "scorecard") and "reads" in _text(drv, "scorecard")
    drv.execute_script("document.getElementById('result').scrollIntoView()")
    drv.save_screenshot(str(shots / "4_result.png"))

    drv.find_element(By.CSS_SELECTOR, "#download a").click()
    png = _wait(drv, lambda: [p for p in drv.downloads.glob("*.png")], timeout=60, what="the download")[0]
    with Image.open(png) as im:
        meta = json.loads(im.info["mien"])
        size = im.size
    assert meta["request"] == "happy 0.60, AU12L=4.5" and meta["seed"] == 7 and meta["steps"] == STEPS
    assert meta["software"] == "mien" and read_provenance(png).watermark.found  # marked, as mien generate marks
    assert size == (512, 512)  # the example photo's full size


def _upload(drv, path):
    from selenium.webdriver.common.by import By

    drv.get(drv.current_url)  # a fresh page: one upload per case
    _wait(drv, lambda: "Upload a photo" in _text(drv, "status"), what="the page")
    drv.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys(str(path))


def _huge_png(path, w=12000, h=9000):
    """A small PNG whose header says 12000 x 9000 (108 MP): the page must refuse it before decoding."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (8, 8), (128, 128, 128)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_bad_input_through_the_page_gives_clear_messages(server, browser, tmp_path):
    """A non-image, a huge image, a photo without a face, a photo with many faces: each a one-line message."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By

    from mien.cli.analyze import example_path

    drv = browser
    drv.get(server)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    _upload(drv, text)
    _wait(drv, lambda: "notes.jpg: not an image file mien can read" in _text(drv, "status"), what="the non-image message")
    assert "Traceback" not in drv.page_source

    huge = tmp_path / "huge.png"
    _huge_png(huge)
    _upload(drv, huge)
    _wait(drv, lambda: "huge.png: image is" in _text(drv, "status") and "over the 100 MP limit" in _text(drv, "status"),
          what="the huge-image message")  # Pillow's bomb guard or mien's size check: both name the limit

    empty = tmp_path / "wall.png"
    Image.new("RGB", (400, 300), (200, 190, 180)).save(empty)
    _upload(drv, empty)
    _wait(drv, lambda: "no face found" in _text(drv, "status"), what="the no-face message")

    photo = np.asarray(Image.open(example_path()).convert("RGB"))
    group = np.concatenate([np.concatenate([photo, photo[:, ::-1]], 1)] * 2, 0)  # four faces, 2 x 2
    many = tmp_path / "group.png"
    Image.fromarray(group).save(many)
    _upload(drv, many)
    _wait(drv, lambda: "4 faces found (largest first)" in _text(drv, "status"), what="the faces message")
    assert len(drv.find_elements(By.CSS_SELECTOR, "#faces img")) == 4
    _click_choice(drv, "face", "face 2")
    drv.find_element(By.ID, "generate").click()
    _wait(drv, lambda: "done" in _text(drv, "status"), timeout=300, what="the result for face 2")
    png = sorted(drv.downloads.glob("*.png"))
    drv.find_element(By.CSS_SELECTOR, "#download a").click()
    new = _wait(drv, lambda: [p for p in drv.downloads.glob("*.png") if p not in png], timeout=60, what="the download")
    with Image.open(new[0]) as im:
        assert json.loads(im.info["mien"])["face"] == 2 and im.size == (1024, 1024)
