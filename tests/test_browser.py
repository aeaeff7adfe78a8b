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
    expect(page.locator("#heatmap img")).to_be_visible(timeout=60_000)  # follows the answer, beside the bars
    expect(page.locator("#heatmap-caption")).to_contain_text("Occlusion map: bright where painting over the slice")
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
    expect(page.locator("#heatmap img")).to_be_visible(timeout=60_000)
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
        for panel in ("#heatmap", "#heatmap-caption", "#joint", "#path", "#stage-1"):
            expect(page.locator(panel)).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "browser-refusal.png"), full_page=True)
    finally:
        demo.close()


def test_the_answer_shows_while_its_heatmap_is_still_being_drawn(browser, app_url, tiny_cascade, monkeypatch,
                                                                  tmp_path):
    """Catches the answer held back until the heatmap is drawn (occlusion takes 1-2 s a slice)."""
    import threading

    from playwright.sync_api import expect

    from mri_cascade.service import HEATMAP_PENDING

    release = threading.Event()
    explain_batch = tiny_cascade.explain_batch

    def slow(*args, **kwargs):
        release.wait(30)
        return explain_batch(*args, **kwargs)

    monkeypatch.setattr(tiny_cascade, "explain_batch", slow)
    scan = tmp_path / "slice.png"
    synthetic_slice(12).save(scan)
    page = open_page(browser, app_url)
    page.locator("input[type=file]").first.set_input_files(str(scan))
    expect(page.locator("#answer h2")).to_be_visible(timeout=60_000)
    expect(page.locator("#heatmap-caption")).to_contain_text(HEATMAP_PENDING)
    expect(page.locator("#heatmap img")).to_have_count(0)
    release.set()
    expect(page.locator("#heatmap img")).to_be_visible(timeout=60_000)
    expect(page.locator("#heatmap-caption")).to_contain_text("Occlusion map")


def test_the_series_gallery_shows_whole_slices_and_labels_that_fit(browser, app_url, tmp_path):
    """Catches the series heatmaps cropped to squares (object-fit cover), a third column cut off at the panel's edge
    and the gallery's label cut off mid-word."""
    from playwright.sync_api import expect

    slices = []
    for seed in range(3):
        slices.append(str(tmp_path / f"slice-{seed}.png"))
        synthetic_slice(seed, lesion=True).save(slices[-1])
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Patient series").click()
    page.locator("input[type=file][multiple]").set_input_files(slices)
    gallery = page.locator("#series-heatmaps")
    expect(gallery.locator("img")).to_have_count(3, timeout=60_000)
    expect(page.locator("#series-heatmap-caption")).to_contain_text("Occlusion map")
    fits = gallery.evaluate("""g => {
        const edge = g.getBoundingClientRect().right;
        const images = [...g.querySelectorAll('img')];
        const texts = [...g.querySelectorAll('.caption-label, [data-testid=block-label]')];
        return {fit: images.map(i => getComputedStyle(i).objectFit),
                inside: images.every(i => i.getBoundingClientRect().right <= edge + 1),
                cut: texts.filter(t => t.scrollWidth > t.clientWidth + 1).map(t => t.innerText),
                captions: texts.map(t => t.innerText)};
    }""")
    assert fits["fit"] == ["contain"] * 3 and fits["inside"] and fits["cut"] == []
    assert {"slice 1", "slice 2", "slice 3"} <= set(fits["captions"])
    gallery.screenshot(path=str(ARTIFACTS / "browser-series-heatmaps.png"))


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
