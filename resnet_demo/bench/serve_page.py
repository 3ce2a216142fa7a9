"""The page in Debian's Chromium, as a visitor sees it (``bench --serve``'s browser rows): from a new
photo to its top-5 and map drawn and to every panel drawn, and from a click on another stage to its
map drawn. The page reports each moment itself; see :func:`browser_s`."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .process_cpu import cores_used

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "browser_s"]

CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium as root on a closed network: no sandbox, no GPU, no background calls. The browser
# test and the README's screenshot script use the same list.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


def browser_s(url: str, photos: list[Path], *, repeats: int, pid: int) -> dict[str, float] | None:
    """Median seconds, in Debian's Chromium, from setting a photo in the page to its top-5 and map
    drawn ("map"), to every panel drawn with its maps ("all"), and from a click on another stage to
    its map drawn ("stage"); None without Chromium or Playwright. Consecutive photos differ, so
    every panel must change.

    The page reports each moment itself (a mutation observer and image load events, awaited as a
    promise): polling from the test driver would take a core of a 2-core machine from the server.
    Each time counts from the visitor's action as the page receives it (the file input's change,
    the click), not from the driver's command (Playwright's own checks before a click take 20-40 ms).
    Before each action the server's process (``pid``) is left to finish the last one's follow-up
    events, as a visitor looking at the answer would.
    """
    if not CHROMIUM.exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    times: dict[str, list[float]] = {"map": [], "all": [], "stage": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            for i in range(repeats + 1):  # the first warms up
                _settle(pid)
                page.evaluate(_WATCH_PHOTO)
                page.locator("#photo input[type=file]").set_input_files(str(photos[i % len(photos)]))
                moments = {key: page.evaluate(f"window.__drawn.{key}") for key in ("map", "all")}
                _settle(pid)
                page.evaluate(_WATCH_STAGE)
                page.locator("#stage label").filter(has_text=STAGE_CLICKS[i % len(STAGE_CLICKS)]).click()
                moments["stage"] = page.evaluate("window.__drawn.stage")
                _settle(pid)
                page.evaluate(_WATCH_STAGE)  # back to layer4, where every new photo's map is asked
                page.locator("#stage label").filter(has_text="layer4").click()
                page.evaluate("window.__drawn.stage")
                if i:
                    for key, seconds in moments.items():
                        times[key].append(seconds)
        finally:
            browser.close()
    return {key: statistics.median(ts) for key, ts in times.items()}


STAGE_CLICKS = ("layer3", "layer2")  # the page opens on layer4; each photo then shows another stage
_PANELS = "#heatmap-slider img, #strip img, #features img, #fusion img"
# In the page: promises that resolve, to the seconds since they were set up (just before the driver sets
# the photo or clicks), once the slider's two images are new and decoded (the top-5 comes in the same
# message: random weights may rank the same five classes for two photos, so its text is no sign), and
# once every panel's images (the slider's 2 + 5 + 5 + 1) are.
_WATCH = """(kind) => {
  const srcs = (sel) => [...document.querySelectorAll(sel)].map(i => i.src);
  const drawn = (imgs, n) => imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
  const fresh = (sel, before, n) => {
    const imgs = [...document.querySelectorAll(sel)];
    return drawn(imgs, n) && imgs.every(i => !before.includes(i.src));
  };
  const changed = (sel, before, n) => {  // another map over the same crop: the crop's file stays
    const imgs = [...document.querySelectorAll(sel)];
    return drawn(imgs, n) && imgs.some(i => !before.includes(i.src));
  };
  const slider = srcs('#heatmap-slider img'), all = srcs('PANELS');
  // From the action as the page receives it: the file input's change, or the click.
  let t0 = performance.now();
  const action = kind === 'photo' ? 'change' : 'click';
  document.addEventListener(action, () => { t0 = performance.now(); }, {capture: true, once: true});
  // Checked only when an image may have changed (a new element, a new src, an image loaded): the
  // page changes text and classes far more often, and each check queries the whole page.
  const watch = (done) => new Promise((resolve, reject) => {
    const stop = () => { obs.disconnect(); document.removeEventListener('load', loaded, true); };
    const check = () => { if (done()) { stop(); resolve((performance.now() - t0) / 1000); } };
    const loaded = (e) => { if (e.target.tagName === 'IMG') check(); };
    setTimeout(() => { stop(); reject(new Error('not drawn within 60 s')); }, 60000);
    const obs = new MutationObserver((records) => {
      if (records.some(r => r.type === 'attributes' || [...r.addedNodes].some(n => n.nodeType === 1))) check();
    });
    obs.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
    document.addEventListener('load', loaded, true);
  });
  window.__drawn = kind === 'photo'
    ? {map: watch(() => fresh('#heatmap-slider img', slider, 2)),
       all: watch(() => fresh('PANELS', all, 13))}
    : {stage: watch(() => changed('#heatmap-slider img', slider, 2))};
}""".replace("PANELS", _PANELS)
_WATCH_PHOTO = f"({_WATCH})('photo')"
_WATCH_STAGE = f"({_WATCH})('stage')"


def _settle(pid: int, *, idle_share: float = 0.1, window_s: float = 0.2, timeout_s: float = 30.0) -> None:
    """Wait until the server's process uses under ``idle_share`` of a core over ``window_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cores_used(pid, window_s) >= idle_share:
        pass
