"""A real browser: Debian's Chromium, headless, driven by Playwright, against the app in-process.

Screenshots land in test-artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from resnet_demo.bench.serve import CHROMIUM_ARGS

from .conftest import EXAMPLES, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium for the browser test (see .ci/run)", pytrace=False)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def page(app_url: str):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(120_000)
            pg.goto(app_url)
            yield pg
        finally:
            browser.close()


def test_upload_explain_and_architecture(page) -> None:
    page.get_by_text("ResNet Explorer").first.wait_for()
    banner = page.locator("#weights-status")
    banner.get_by_text("Pretrained weights unavailable").wait_for()
    page.screenshot(path=ARTIFACTS / "01-start.png", full_page=True)

    page.locator("#photo input[type=file]").set_input_files(str(EXAMPLES / "cat.jpg"))
    # The label fills in with five classes and percentages; the heat map appears.
    page.locator("#top5").get_by_text("%").first.wait_for()
    page.locator("#heatmap img").wait_for()
    page.locator("#strip img").nth(4).wait_for()
    page.locator("#caption").get_by_text("Grad-CAM").wait_for()
    assert "UNTRAINED" in page.locator("#caption").inner_text()
    page.screenshot(path=ARTIFACTS / "02-explain.png", full_page=True)

    page.get_by_role("tab", name="Architecture").click()
    plot = page.locator("#diagram .js-plotly-plot")
    plot.wait_for()
    box = plot.bounding_box()
    assert box is not None and box["height"] > 200, "the diagram rendered at (almost) zero height"
    page.locator("#diagram .colorbar").first.wait_for()  # coloured by the cat's block statistics
    page.screenshot(path=ARTIFACTS / "03-architecture.png", full_page=True)

    page.get_by_role("tab", name="Compare depths").click()
    page.locator("#compare-run").wait_for()
    page.screenshot(path=ARTIFACTS / "04-compare.png", full_page=False)


def test_methods_faithfulness_and_sanity(page) -> None:
    page.get_by_role("tab", name="Explain").click()
    page.locator("#heatmap img").wait_for()
    page.locator("#show-methods input[type=checkbox]").check()
    tiles = page.locator("#methods img")
    tiles.nth(7).wait_for()  # the eight quick methods
    page.locator("#methods").get_by_text("LayerCAM").first.wait_for()
    page.locator("#methods").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "05-methods.png", full_page=False)

    page.locator("#trust").get_by_text("How far to trust this map").first.click()
    steps = page.locator("#steps input[type=number]")
    steps.fill("4")  # the fewest points per curve: this is a random-weights app, only the wiring is tested
    steps.press("Enter")
    page.locator("#faith-run").get_by_text("s)").wait_for()  # the label says the expected time
    page.locator("#faith-run").click()
    plot = page.locator("#faith-plot .js-plotly-plot")
    plot.wait_for()
    page.locator("#faith-summary").get_by_text("Deletion AUC").wait_for()
    box = plot.bounding_box()
    assert box is not None and box["height"] > 250, "the curves rendered at (almost) zero height"
    page.locator("#rank-run").click()
    page.locator("#ranking").get_by_text("random map (chance)").wait_for()
    page.locator("#faith-plot").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "06-faithfulness.png", full_page=False)

    page.locator("#sanity-run").click()
    page.locator("#sanity img").nth(5).wait_for()  # the original and five randomisation steps
    verdict = page.locator("#verdict strong").first
    verdict.wait_for()
    assert "learned weights" in verdict.inner_text()
    page.locator("#sanity").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "07-sanity.png", full_page=False)


def test_transfer_tab(page) -> None:
    page.get_by_role("tab", name="Transfer").click()
    page.locator("#transfer-run").wait_for()
    page.locator("#transfer-diagram .js-plotly-plot").wait_for()  # the backbone, before any photo
    page.locator("#transfer-size input").click()
    page.get_by_role("option", name="320").click()  # the random-weights app: only the wiring is tested
    page.locator("#transfer-photo input[type=file]").set_input_files(str(EXAMPLES / "cat.jpg"))
    page.locator("#transfer-run").click()
    page.locator("#transfer-strip img").nth(4).wait_for()  # Grad-CAM at all five stages
    page.locator("#transfer-features img").nth(4).wait_for()
    summary = page.locator("#transfer-summary")
    summary.get_by_text("UNTRAINED").wait_for()
    assert "Backbone = our resnet50" in summary.inner_text()
    diagram = page.locator("#transfer-diagram")
    diagram.get_by_text("ASPP head").first.wait_for()  # the stages DeepLabV3's heads read are marked
    box = diagram.locator(".js-plotly-plot").bounding_box()
    assert box is not None and box["height"] > 200, "the diagram rendered at (almost) zero height"
    page.screenshot(path=ARTIFACTS / "08-transfer.png", full_page=True)

    # Explain another class the photo was segmented into: the menu lists them after the run.
    page.locator("#transfer-target input").click()
    options = page.get_by_role("option")
    options.first.wait_for()
    names = [t.split("\n")[-1].split(" (")[0] for t in options.all_inner_texts()]  # past the selected one's ✓
    current = page.locator("#transfer-target input").input_value().split(" (")[0]
    others = [n for n in names if n != current]
    if others:
        options.filter(has_text=f"{others[0]} (").first.click()
        summary.get_by_text(f"class '{others[0]}'").wait_for()
        page.locator("#transfer-legend").click()  # leaving the menu must not start another run
        page.wait_for_timeout(1500)
        assert page.get_by_text("processing |").count() == 0, "a second run started after the pick"
    else:
        page.keyboard.press("Escape")
    page.locator("#transfer-strip").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "09-transfer-strip.png", full_page=False)
