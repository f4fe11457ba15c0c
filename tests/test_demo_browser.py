"""The Gradio demo in a real browser: Debian Chromium driven by Playwright (headless).

Skipped, with the reason, when Gradio, the Playwright package or a Chromium binary is missing
(.ci/demo_env.sh installs all three).  Playwright's own browser downloads are not used: the
system Chromium is launched through ``executable_path`` (override with $M2AE_CHROMIUM).
Screenshots go to $M2AE_DEMO_SCREENSHOTS when set, else to the test's temporary folder; the
path is printed (pytest -s shows it).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright not installed (pip install playwright; see .ci/demo_env.sh)")

from test_demo import demo_server, tiny_model  # noqa: E402  (tests/ is on sys.path under pytest)

from m2ae_core.resources import example_images  # noqa: E402

CHROMIUM = (os.environ.get("M2AE_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))
if not CHROMIUM:
    pytest.skip("Chromium not found (apt-get install chromium, or run .ci/demo_env.sh; "
                "or set M2AE_CHROMIUM to its path)", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
ERROR_TOASTS = ".toast-body.error"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_browser_server")
    with demo_server(folder, tiny_model(folder / "tiny.safetensors")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside = []  # the demo must not need the internet (fonts, CDNs, analytics)
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((server, "data:", "blob:")) else None)
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_selector("#restore")
    yield page
    context.close()
    assert not outside, f"the page reached outside the server: {outside}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("M2AE_DEMO_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _upright_photo_as_rotated_jpeg(path: Path) -> tuple[int, int]:
    """A JPEG stored on its side with EXIF orientation 6; returns the upright (width, height)."""
    with Image.open(example_images()[0]) as source:
        upright = source.convert("RGB").crop((0, 64, 384, 320))  # 384 x 256
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=92)
    return upright.size


def _wait_for_result(page) -> list[dict]:
    """Wait until both slider images are loaded; return their src and natural sizes."""
    page.wait_for_function(
        """() => {
            const imgs = document.querySelectorAll('#before-after img');
            return imgs.length >= 2 && [...imgs].every(i => i.complete && i.naturalWidth > 0);
        }""")
    page.wait_for_selector("#stats :text('GMAC')")
    return page.eval_on_selector_all(
        "#before-after img",
        "imgs => imgs.map(i => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight}))")


def _assert_no_error(page):
    assert page.locator(ERROR_TOASTS).count() == 0, page.locator(ERROR_TOASTS).all_inner_texts()


def test_upload_restore_and_compare(page, tmp_path, shots):
    photo = tmp_path / "phone_photo.jpg"
    width, height = _upright_photo_as_rotated_jpeg(photo)
    page.set_input_files("#input-image input[type=file]", str(photo))
    page.wait_for_selector("#input-image img")
    page.click("#restore")
    images = _wait_for_result(page)

    _assert_no_error(page)
    assert len(images) == 2
    for image in images:  # lossless, full resolution, EXIF-upright
        assert image["src"].endswith(".png"), image["src"]
        assert (image["w"], image["h"]) == (width, height)
    stats = page.inner_text("#stats")
    assert "of the pixels processed" in stats and "GMAC" in stats
    page.wait_for_selector("#mask-overlay img")
    page.wait_for_selector("#downloads a[download='phone_photo_restored.png']")
    shot = shots / "demo_restored.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_example_from_the_gallery(page, shots):
    page.locator("#examples button.gallery-item").first.click()
    page.wait_for_selector("#input-image img")
    page.click("#restore")
    images = _wait_for_result(page)
    _assert_no_error(page)
    assert [(i["w"], i["h"]) for i in images] == [(384, 384)] * 2
    page.wait_for_selector(f"#downloads a[download='{example_images()[0].stem}_restored.png']")
    page.screenshot(path=str(shots / "demo_example.png"), full_page=True)


def test_best_quality_checkbox(page):
    page.locator("#examples button.gallery-item").first.click()
    page.wait_for_selector("#input-image img")
    page.locator("#best-quality input[type=checkbox]").check()
    page.click("#restore")
    _wait_for_result(page)
    _assert_no_error(page)
    assert "average of 8 mirrored / rotated restorations" in page.inner_text("#stats")


def test_painted_mask_replaces_the_prediction(page, shots):
    page.locator("#examples button.gallery-item").nth(1).click()
    page.wait_for_selector("#input-image img")
    page.locator("#mask-accordion").get_by_text("Draw the blur mask yourself").click()
    canvas = page.locator("#mask-editor canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()  # mouse strokes outside the viewport do not land
    page.wait_for_timeout(500)  # the editor loads its background asynchronously
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 5):  # few events: each one re-renders the WebGL canvas in software
        page.mouse.move(x + 25 * step, y + 8 * step)
    page.mouse.up()
    page.click("#restore")
    _wait_for_result(page)
    _assert_no_error(page)
    assert "your mask covers" in page.inner_text("#stats")
    page.screenshot(path=str(shots / "demo_painted_mask.png"), full_page=True)


def test_errors_are_shown_to_the_user(page, tmp_path):
    """The no-error checks above can fail: a bad request does show an error toast."""
    page.click("#restore")
    toast = page.locator(ERROR_TOASTS)
    toast.first.wait_for()
    assert "Upload a photo first" in toast.first.inner_text()

    big = tmp_path / "too_big.png"
    Image.fromarray(np.full((500, 500, 3), 128, np.uint8)).save(big)
    page.set_input_files("#input-image input[type=file]", str(big))
    page.wait_for_selector(f"{ERROR_TOASTS} :text('too_big.png')")
    assert "at most" in page.locator(ERROR_TOASTS).last.inner_text()
