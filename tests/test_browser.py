"""A real browser: Debian's Chromium, headless, driven by Playwright, against the app in-process.

Screenshots land in test-artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from resnet_demo.bench.serve import CHROMIUM_ARGS
from resnet_demo.ui.browser_views import STAGE_FROM_STRIP

from .conftest import EXAMPLES, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CAT_SIZE = (451, 300)  # examples/cat.jpg, under the bound of the display copy: the whole photo as it is
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium for the browser test (see .ci/run)", pytrace=False)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser(app_url: str):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def visit(browser, url: str):
    """A new visitor's browser context and page, the app loaded; close the context to leave."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(url)
    pg.get_by_text("ResNet Explorer").first.wait_for()
    return context, pg


@pytest.fixture
def page(browser, app_url: str):
    """A new visitor: a page of its own, the app loaded. Each test starts from here, so that each
    passes alone (``pytest tests/test_browser.py::test_X``)."""
    context, pg = visit(browser, app_url)
    try:
        yield pg
    finally:
        context.close()  # the page closes: the app forgets the visitor (demo.unload)


def wait_for_answer(page) -> None:
    """Wait for all of a photo's answer on the Explain tab: the top-5 with percentages, the slider's
    photo and map, the strip of five stages and the caption."""
    page.locator("#top5").get_by_text("%").first.wait_for()
    sync_api.expect(page.locator("#heatmap-slider img")).to_have_count(2, timeout=120_000)
    sync_api.expect(page.locator("#strip img")).to_have_count(5, timeout=120_000)
    page.locator("#caption").get_by_text("Grad-CAM").wait_for()
    settled(page)


def settled(page) -> None:
    """Wait until no event shows its progress over the top-5 (an example's own event follows its cached answer)."""
    page.wait_for_function("() => !document.querySelector('#top5 [data-testid=status-tracker]:not(.hide)')")


def slider_images(page, *, replacing: list | None = None) -> list:
    """The slider's two images, ``[src, [width, height]]`` each, once both are decoded (and neither is one
    of ``replacing``'s)."""
    page.wait_for_function(
        """old => {
          const imgs = [...document.querySelectorAll('#heatmap-slider img')];
          return imgs.length == 2 && imgs.every(i => i.complete && i.naturalWidth > 0 && !old.includes(i.src));
        }""",
        arg=[src for src, _size in replacing or []],
    )
    return page.locator("#heatmap-slider img").evaluate_all(
        "imgs => imgs.map(i => [i.src, [i.naturalWidth, i.naturalHeight]])"
    )


def explain_photo(page, photo: Path) -> None:
    """Drop ``photo`` on the Explain tab and wait for all of its answer."""
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    wait_for_answer(page)


@pytest.fixture
def explained(page):
    """A page with the cat explained on the Explain tab."""
    explain_photo(page, EXAMPLES / "cat.jpg")
    return page


def test_upload_explain_and_architecture(page) -> None:
    banner = page.locator("#weights-status")
    banner.get_by_text("Pretrained weights unavailable").wait_for()
    # One line; why and what to do behind its "details" disclosure, closed.
    line = banner.get_by_text("UNTRAINED").first.bounding_box()
    summary = banner.locator("summary", has_text="details")
    assert line is not None and abs(summary.bounding_box()["y"] - line["y"]) < line["height"], "not on one line"
    reason = banner.get_by_text("resnet50-11ad3fa6.pth")
    assert not reason.is_visible()
    page.screenshot(path=ARTIFACTS / "01-start.png", full_page=True)
    summary.click()
    reason.wait_for()
    assert "Weights menu" in reason.inner_text()
    summary.click()  # closed again for the screenshots below
    sync_api.expect(reason).to_be_hidden()

    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/file=" in r.url else None)
    explain_photo(page, EXAMPLES / "cat.jpg")
    assert "UNTRAINED" in page.locator("#caption").inner_text()
    # The page's images came inside its messages: none fetched as a file afterwards.
    shown = page.locator("#heatmap-slider img, #strip img, #fusion img, #features img")
    sync_api.expect(shown).to_have_count(13)
    assert all(src.startswith("data:image/jpeg;base64,") for src in shown.evaluate_all("i => i.map(x => x.src)"))
    assert not [url for url in fetched if url.endswith(".jpeg")], fetched
    # The photo against its map: the crop the model saw and the map over it, one size; /explain's image hidden.
    crop = slider_images(page)
    assert [size for _src, size in crop] == [[224, 224], [224, 224]], crop
    assert page.locator("#heatmap").count() == 0
    box = page.locator("#heatmap-slider").bounding_box()
    assert box is not None and box["height"] > 250, "the slider rendered at (almost) zero height"
    # Both pictures drawn in the same box, inside the slider: the photo lines up with its map.
    rects = page.locator("#heatmap-slider img").evaluate_all(
        "imgs => imgs.map(i => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"
    )
    assert rects[0] == pytest.approx(rects[1], abs=1), rects
    assert rects[0][1] >= box["y"] - 1 and rects[0][1] + rects[0][3] <= box["y"] + box["height"] + 1, (rects, box)
    page.screenshot(path=ARTIFACTS / "02-explain.png", full_page=True)
    page.get_by_label("The whole photo").check()  # the whole photo against the map placed on it
    whole = slider_images(page, replacing=crop)
    assert whole[0][1] == whole[1][1] == list(CAT_SIZE), whole

    page.get_by_role("tab", name="Architecture").click()
    plot = page.locator("#diagram .js-plotly-plot")
    plot.wait_for()
    box = plot.bounding_box()
    assert box is not None and box["height"] > 200, "the diagram rendered at (almost) zero height"
    page.locator("#diagram .colorbar").first.wait_for()  # coloured by the cat's block statistics
    page.screenshot(path=ARTIFACTS / "03-architecture.png", full_page=True)
    # The diagram follows the model of the last explained photo.
    shown = page.locator("#architecture-arch input:checked")
    page.locator("#architecture-arch").get_by_text("ResNet-101").click()
    sync_api.expect(shown).to_have_value("resnet101")
    sync_api.expect(page.locator("#diagram .colorbar")).to_have_count(0)  # no photo of ResNet-101 yet
    page.get_by_role("tab", name="Explain").click()
    page.locator("#run").click()
    wait_for_answer(page)
    sync_api.expect(shown).to_have_value("resnet50")
    page.get_by_role("tab", name="Architecture").click()
    page.locator("#diagram .colorbar").first.wait_for()

    page.get_by_role("tab", name="Compare depths").click()
    page.locator("#compare-run").wait_for()
    page.screenshot(path=ARTIFACTS / "04-compare.png", full_page=False)


def _new_sessions(before: set[str], *, timeout_s: float = 60.0) -> set[str]:
    """The sessions with analyses in the app's store (this process's) that ``before`` did not have."""
    from resnet_demo.ui.analysis_store import ANALYSES

    deadline = time.monotonic() + timeout_s
    while not (ANALYSES.sessions() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return ANALYSES.sessions() - before


def test_examples_are_cached_and_each_visitor_keeps_their_own_analysis(browser, app_url: str) -> None:
    from resnet_demo.ui.analysis_store import ANALYSES

    example = "button.gallery-item:has(img[src$='/coffee.jpg'])"  # clicked in this test only
    first_context, first = visit(browser, app_url)
    second_context, second = visit(browser, app_url)
    try:
        before = ANALYSES.sessions()
        first.locator(example).click()  # computes the example's answer, and caches it
        wait_for_answer(first)
        mine = _new_sessions(before)
        second.locator(example).click()  # served from the cache
        wait_for_answer(second)
        yours = _new_sessions(before | mine)
        assert len(mine) == len(yours) == 1, (mine, yours)  # an analysis each, in each one's session
        settled(first)
        settled(second)
        assert second.locator("#top5").inner_text() == first.locator("#top5").inner_text()
        assert "UNTRAINED" in second.locator("#caption").inner_text()
        second.screenshot(path=ARTIFACTS / "10-example.png", full_page=False)

        first_context.close()  # the first visitor leaves, and their analyses go (demo.unload)
        deadline = time.monotonic() + 60
        while mine & ANALYSES.sessions() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not mine & ANALYSES.sessions(), "the first visitor's analyses outlived their page"
        # Another view comes from the second visitor's own analysis: the first one's is gone.
        second.locator("#stage").get_by_text("layer3", exact=True).click()
        second.locator("#caption").get_by_text("layer3").wait_for(timeout=30_000)
        assert "expired" not in second.content().lower()
    finally:
        first_context.close()
        second_context.close()


def test_another_stage_is_drawn_by_the_browser_from_the_strip(explained) -> None:
    page = explained
    strip = page.locator("#strip img").evaluate_all("imgs => imgs.map(i => i.src)")  # stem .. layer4
    assert len(strip) == 5 and page.locator("#heatmap-slider img").nth(1).get_attribute("src") == strip[4]
    join = "**/gradio_api/queue/join*"
    page.route(join, lambda route: route.abort())  # the server never hears of the click
    try:
        page.locator("#stage").get_by_text("layer2", exact=True).click()
        page.wait_for_function(
            "src => document.querySelectorAll('#heatmap-slider img')[1]?.src === src", arg=strip[2], timeout=10_000
        )
    finally:
        page.unroute(join)
    # The function itself: it swaps only a map that is one of the strip's tiles, and only to a tile it has.
    file = "p => ({path: p, url: 'u/' + p})"
    cases = page.evaluate(
        f"""() => {{
          const f = {STAGE_FROM_STRIP}, file = {file};
          const strip = [{{image: file('s0'), caption: 'stem'}}, {{image: file('s3'), caption: 'layer3 (all zero)'}},
                         {{image: file('s4'), caption: 'layer4'}}];
          return [f('layer3', strip, [file('crop'), file('s4')]), f('layer3', strip, [file('crop'), file('lrp')]),
                  f('layer2', strip, [file('crop'), file('s4')]), f('layer3', null, null), f('stem', [], null)];
        }}"""
    )
    paths = [[None if c is None else [f["path"] for f in c] for c in case] for case in cases]
    assert paths == [[["crop", "s3"]], [["crop", "lrp"]], [["crop", "s4"]], [None], [None]]


def test_methods_faithfulness_and_sanity(explained) -> None:
    page = explained
    page.locator("#show-methods input[type=checkbox]").check()
    tiles = page.locator("#methods img")
    tiles.nth(7).wait_for()  # the eight quick methods
    page.locator("#methods").get_by_text("LayerCAM").first.wait_for()
    page.locator("#methods").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "05-methods.png", full_page=False)
    # While it shows, a new photo's methods replace the last one's.
    before = tiles.evaluate_all("imgs => imgs.map(i => i.src)")
    explain_photo(page, EXAMPLES / "coffee.jpg")
    page.wait_for_function(
        "old => { const s = [...document.querySelectorAll('#methods img')].map(i => i.src);"
        " return s.length >= 8 && s.every(x => !old.includes(x)); }",
        arg=before,
    )

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


TRANSFER_PHOTO = EXAMPLES / "cat.jpg"
TRANSFER_SIZE = 320  # the random-weights app: only the wiring is tested


def _segmented_classes(photo: Path) -> list[str]:
    """The classes the app's own segmentation model (shared in this process) finds in ``photo``."""
    from resnet_demo.core.images import load_image
    from resnet_demo.transfer.segment import segment
    from resnet_demo.transfer.weights import MODELS, shared_transfer

    loaded = shared_transfer(task="segment", model=MODELS["segment"][0], backbone="resnet50", fallback_to_random=True)
    return [c.name for c in segment(loaded=loaded, image=load_image(photo), size=TRANSFER_SIZE).classes]


def test_transfer_tab(page) -> None:
    found = _segmented_classes(TRANSFER_PHOTO)
    assert len(found) >= 2, f"the photo must be segmented into two classes at least to test the pick: {found}"
    events: list[str] = []  # every event the page sends to the server, in order
    page.on("request", lambda r: events.append(r.url) if "/queue/join" in r.url or "/run/predict" in r.url else None)

    page.get_by_role("tab", name="Transfer").click()
    page.locator("#transfer-run").wait_for()
    page.locator("#transfer-diagram .js-plotly-plot").wait_for()  # the backbone, before any photo
    page.locator("#transfer-size input").click()
    page.get_by_role("option", name=str(TRANSFER_SIZE)).click()
    page.locator("#transfer-photo input[type=file]").set_input_files(str(TRANSFER_PHOTO))
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
    assert len(names) >= 2, f"the menu lists {names}; the model found {found}"
    current = page.locator("#transfer-target input").input_value().split(" (")[0]
    other = next(n for n in names if n != current)
    before = len(events)
    options.filter(has_text=f"{other} (").first.click()
    summary.get_by_text(f"class '{other}'").wait_for()
    page.locator("#transfer-legend").click()  # leaves the menu (Gradio's dropdown fires .input then)
    # The pick must start one run, and leaving the menu none. Any event they started reaches the
    # server before the next one the page sends: a stage picked for the large map (from the strip).
    page.get_by_label("Large map: Grad-CAM stage").click()
    with page.expect_response(lambda r: "/run/predict" in r.url):
        page.get_by_role("option", name="layer2", exact=True).click()
    sent = ["run" if "/queue/join" in url else "stage" for url in events[before:]]
    assert sent == ["run", "stage"], f"the pick, leaving the menu and the stage sent {sent}"
    sync_api.expect(page.get_by_role("option")).to_have_count(0)  # the menu closed: not in the screenshot
    page.locator("#transfer-strip").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "09-transfer-strip.png", full_page=False)
