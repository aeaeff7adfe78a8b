"""A real browser: headless Chromium uploads a slice, clicks an example, switches the operating point and sees a
refusal. Screenshots of each land in artifacts/."""

import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, launch_app, synthetic_slice

from mri_cascade import LABELS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    expect(page.get_by_text("not a medical device")).to_be_visible(timeout=30_000)
    return page


def test_upload_shows_answer_bars_and_heatmap(browser, app_url, tmp_path):
    from playwright.sync_api import expect

    scan = tmp_path / "slice.png"
    synthetic_slice(5).save(scan)
    page = open_page(browser, app_url)
    page.locator("input[type=file]").first.set_input_files(str(scan))
    answer = page.locator("#answer h2")
    expect(answer).to_be_visible(timeout=60_000)
    assert answer.inner_text().strip() in LABELS.values()
    expect(page.locator("#joint")).to_contain_text(answer.inner_text().strip())
    expect(page.locator("#path")).to_contain_text("Disease detector")
    expect(page.locator("#stage-1")).to_be_visible()
    expect(page.locator("#heatmap img")).to_be_visible()  # where the deciding model looked, beside the bars
    page.screenshot(path=str(ARTIFACTS / "browser-upload.png"), full_page=True)
    assert Path(ARTIFACTS / "browser-upload.png").stat().st_size > 10_000


def test_an_example_answers_on_click_and_the_operating_point_switches(browser, app_url):
    from playwright.sync_api import expect

    page = open_page(browser, app_url)
    examples = page.locator("#examples")
    expect(examples).to_contain_text("Glioma (true answer", timeout=30_000)
    assert examples.get_by_text("(true answer").count() == 8
    examples.screenshot(path=str(ARTIFACTS / "browser-examples.png"))
    examples.get_by_text("Glioma (true answer").click()
    answer = page.locator("#answer")
    expect(answer.locator("h2")).to_be_visible(timeout=60_000)
    expect(answer).to_contain_text("operating point: Balanced")
    expect(page.locator("#heatmap img")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-example-answer.png"), full_page=True)
    page.locator("#operating-point").get_by_text("Screening: fewer missed").click()
    expect(answer).to_contain_text("operating point: Screening", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-screening.png"), full_page=True)


def test_a_refusal_shows_its_reason_and_no_empty_panels(browser, guarded_cascade, tmp_path):
    from playwright.sync_api import expect

    from mri_cascade.research.probes import non_mri_images

    letter = tmp_path / "letter.png"
    next(image for kind, image in non_mri_images() if kind == "document").save(letter)
    demo, url = launch_app(guarded_cascade)
    try:
        page = open_page(browser, url)
        page.locator("input[type=file]").first.set_input_files(str(letter))
        expect(page.locator("#answer h2")).to_have_text("No answer: not a brain MRI slice", timeout=60_000)
        expect(page.locator("#answer")).to_contain_text("Upload a single 2-D brain MRI slice instead")
        for panel in ("#heatmap", "#joint", "#path", "#stage-1"):
            expect(page.locator(panel)).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "browser-refusal.png"), full_page=True)
    finally:
        demo.close()


def test_a_text_file_renamed_jpg_gets_a_message_naming_it(browser, app_url, tmp_path):
    """Catches red "Error" badges with no message: the image box decoded the upload before our loader could."""
    from playwright.sync_api import expect

    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"patient notes, not a picture\n" * 20)
    page = open_page(browser, app_url)
    page.locator("input[type=file]").first.set_input_files(str(notes))
    expect(page.get_by_text("'notes.jpg' is not a readable image")).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "browser-unreadable.png"), full_page=True)


def contrast_with_white(rgb: str) -> float:
    """WCAG contrast ratio of a CSS ``rgb(r, g, b)`` / ``rgba(...)`` colour against white."""
    values = [float(v) for v in rgb[rgb.index("(") + 1 : -1].split(",")[:3]]
    linear = [(v / 255 / 12.92) if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in values]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_the_operating_point_help_reads_as_body_text(browser, app_url):
    """Catches the operating-point help drawn small and faint (a Radio's info) where it explains the one choice."""
    from playwright.sync_api import expect

    page = open_page(browser, app_url)
    help_text = page.locator("#operating-point-help p")
    expect(help_text).to_contain_text("Screening calls a scan healthy only when")
    colour, size = help_text.evaluate("e => [getComputedStyle(e).color, parseFloat(getComputedStyle(e).fontSize)]")
    assert contrast_with_white(colour) >= 4.5 and size >= 14  # WCAG AA for body text
    page.locator("#operating-point").screenshot(path=str(ARTIFACTS / "browser-operating-point.png"))
