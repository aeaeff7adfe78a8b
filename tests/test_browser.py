"""A real browser: headless Chromium uploads a synthetic slice and waits for the answer, the bars and the heatmap."""

import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, synthetic_slice

from mri_cascade import LABELS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


def test_upload_shows_answer_bars_and_disclaimer(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    scan = tmp_path / "slice.png"
    synthetic_slice(5).save(scan)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app_url)
        expect(page.get_by_text("not a medical device")).to_be_visible(timeout=30_000)
        page.locator("input[type=file]").first.set_input_files(str(scan))
        answer = page.locator("#answer h2")
        expect(answer).to_be_visible(timeout=60_000)
        assert answer.inner_text().strip() in LABELS.values()
        expect(page.locator("#joint")).to_contain_text(answer.inner_text().strip())
        expect(page.locator("#path")).to_contain_text("Disease detector")
        expect(page.locator("#stage-1")).to_be_visible()
        expect(page.locator("#heatmap img")).to_be_visible()  # where the deciding model looked, beside the bars
        page.screenshot(path=str(ARTIFACTS / "browser-upload.png"), full_page=True)
        browser.close()
    assert Path(ARTIFACTS / "browser-upload.png").stat().st_size > 10_000
