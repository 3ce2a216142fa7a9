"""Screenshots for the README: the Explain tab's method gallery, trust panel, metric cards and
concepts (CRP, DFF), the Transfer tab's backbone and the Audit tab.

Starts the app in this process on a fine-tuned checkpoint, opens it in Debian's Chromium
(headless, through Playwright), uploads one photo, opens the views and writes
``docs/screenshot-methods.png``, ``docs/screenshot-trust.png``, ``docs/screenshot-metrics.png``,
``docs/screenshot-concepts.png`` and ``docs/screenshot-dff.png``, then the Transfer tab's backbone
diagram (``docs/screenshot-transfer-backbone.png``) and the Audit tab on the sample set
(``docs/screenshot-audit.png``). Not run by the tests.

Offline there are no ImageNet weights; a ResNet-50 fine-tuned on the generated shapes
shows what the app does with a model that has learned something::

    python -m resnet_demo finetune --make-sample /tmp/shapes
    python -m resnet_demo finetune --data /tmp/shapes --weights random --freeze none --image-size 96 \\
        --epochs 20 --batch-size 16 --optimizer adamw --lr 0.001 --out /tmp/shapes-run
    python scripts/screenshots.py --checkpoint /tmp/shapes-run/best.pth --image /tmp/shapes/triangle/triangle_000.jpg

The banner names the checkpoint's file, so give it a name that says what it is
(``--name``, default ``resnet50-shapes-finetuned.pth``: the file is copied under that name).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_demo.bench.serve import CHROMIUM_ARGS  # noqa: E402  (the one list of Chromium's flags)

VIEWPORT = {"width": 1400, "height": 1000}
TIMEOUT_MS = 600_000  # a CPU runs the trust checks in tens of seconds; leave room


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a fine-tuned .pth")
    parser.add_argument("--image", type=Path, required=True, help="the photo to explain")
    parser.add_argument("--name", default="resnet50-shapes-finetuned.pth", help="the file name the banner shows")
    parser.add_argument("--arch", default="resnet50", help="the checkpoint's architecture")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    return parser.parse_args(argv)


def start_app(*, checkpoint: Path, arch: str):
    """The whole app on ``checkpoint``, launched in this process; returns the Blocks (``.local_url``)."""
    from resnet_demo.ui import CSS, INFERENCE_LIMIT, MAX_UPLOAD, QUEUE_SIZE, THEME, build_demo

    demo = build_demo(arch=arch, weights=str(checkpoint))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=INFERENCE_LIMIT)
    demo.launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
        max_file_size=MAX_UPLOAD, theme=THEME, css=CSS,
    )  # fmt: skip
    return demo


def clip_between(page, top_selector: str, bottom_selector: str, *, margin: int = 12) -> dict[str, float]:
    """A page region from the top of one element to the bottom of another, full width."""
    page.evaluate("window.scrollTo(0, 0)")  # bounding boxes are relative to the viewport: make it the page's
    top = page.locator(top_selector).first.bounding_box()
    bottom = page.locator(bottom_selector).first.bounding_box()
    y = max(0.0, top["y"] - margin)
    return {"x": 0, "y": y, "width": VIEWPORT["width"], "height": bottom["y"] + bottom["height"] + margin - y}


def shoot(page, *, image: Path, out: Path) -> list[Path]:
    """Upload ``image``, open the gallery and the trust panel, and write the two screenshots."""
    page.goto(page.url)
    page.locator("#weights-status").get_by_text("fine-tuned").wait_for()
    page.locator("#photo input[type=file]").set_input_files(str(image))
    page.locator("#top5").get_by_text("%").first.wait_for()
    page.locator("#strip img").nth(4).wait_for()
    page.locator("#fusion img").wait_for()
    # layer3: finer maps than layer4, where the CAM family differs more (and CAM says it has none).
    page.locator("#stage").get_by_text("layer3", exact=True).click()
    page.locator("#caption").get_by_text("layer3").wait_for()
    page.locator("#show-methods input[type=checkbox]").check()
    page.locator("#methods").get_by_text("not available at layer3").wait_for()
    page.locator("#methods img").nth(11).wait_for()
    page.wait_for_timeout(1500)  # let the gallery's images finish drawing
    methods = out / "screenshot-methods.png"
    # The banner (which model), the photo, the map, the strip and every method.
    page.screenshot(path=methods, full_page=True, clip=clip_between(page, "#weights-status", "#methods"))

    page.locator("#trust").get_by_text("How far to trust this map").first.click()
    page.locator("#faith-run").get_by_text("s)").wait_for()
    # A model trained on flat shapes still knows a blurred shape: with the blur baseline both curves
    # stay at the top. The mean colour removes the shape itself, so the curves tell the maps apart.
    page.locator("#baseline").get_by_text("mean colour").click()
    page.locator("#faith-run").click()
    page.locator("#faith-summary").get_by_text("Deletion AUC").wait_for()
    page.locator("#rank-run").click()
    page.locator("#ranking").get_by_text("random map (chance)").wait_for()
    page.locator("#sanity-run").click()
    page.locator("#verdict strong").first.wait_for()
    page.locator("#sanity img").nth(5).wait_for()
    page.wait_for_timeout(1500)
    trust = out / "screenshot-trust.png"
    page.screenshot(path=trust, full_page=True, clip=clip_between(page, "#trust", "#verdict"))
    return [methods, trust]


def shoot_concepts(page, *, out: Path) -> list[Path]:
    """On the photo already analysed: the metric cards of the layer3 Grad-CAM (after the trust checks),
    then CRP's concept tiles at layer3 and DFF's parts at layer4 in colour, with their legend."""
    page.locator("#cards-run").click()
    page.locator("#cards-note").get_by_text("Metric cards of").wait_for()
    page.locator("#cards-plot .js-plotly-plot").first.wait_for()
    page.wait_for_timeout(1500)
    cards = out / "screenshot-metrics.png"
    page.screenshot(path=cards, full_page=True, clip=clip_between(page, "#card-metrics", "#cards-note"))

    page.locator("#concepts").get_by_text("What the network looks for").first.click()
    page.locator("#concepts-run").click()
    page.locator("#concept-legend").get_by_text("carry the most relevance").wait_for()
    page.locator("#concept-tiles img").nth(5).wait_for()
    page.wait_for_timeout(1000)
    crp = out / "screenshot-concepts.png"
    page.screenshot(path=crp, full_page=True, clip=clip_between(page, "#concepts", "#concept-legend"))

    page.locator("#stage").get_by_text("layer4", exact=True).click()
    page.locator("#caption").get_by_text("layer4").wait_for()
    page.locator("#concept-kind").get_by_text("Factorisation (DFF)").click()
    page.locator("#concepts-run").click()
    page.locator("#concept-legend").get_by_text("factorised into").wait_for()
    page.wait_for_timeout(1000)
    dff = out / "screenshot-dff.png"
    page.screenshot(path=dff, full_page=True, clip=clip_between(page, "#concepts", "#concept-legend"))
    return [cards, crp, dff]


def shoot_audit(page, *, out: Path) -> list[Path]:
    """The Audit tab on the generated sample set, with the fine-tuned checkpoint the page opened with."""
    page.get_by_role("tab", name="Audit").click()
    page.locator("#audit-data").get_by_text("The sample set").click()
    page.locator("#audit-run").click()
    page.locator("#audit-summary").get_by_text("image(s)").wait_for()
    page.locator("#audit-clusters img").first.wait_for()
    page.wait_for_timeout(1500)
    path = out / "screenshot-audit.png"
    page.screenshot(path=path, full_page=True, clip=clip_between(page, "#audit-summary", "#audit-clusters"))
    return [path]


def shoot_transfer(page, *, out: Path) -> list[Path]:
    """The Transfer tab's backbone diagram for DeepLabV3 on ResNet-50: the stages its heads read and its
    dilated stages. It depends on the architecture only, not on weights, so offline it is what it is online."""
    page.get_by_role("tab", name="Transfer").click()
    diagram = page.locator("#transfer-diagram")
    diagram.get_by_text("ASPP head").first.wait_for()
    path = out / "screenshot-transfer-backbone.png"
    diagram.screenshot(path=path)
    return [path]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / args.name
        shutil.copyfile(args.checkpoint, named)
        demo = start_app(checkpoint=named, arch=args.arch)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_context(viewport=VIEWPORT).new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    page.goto(demo.local_url)
                    written = shoot(page, image=args.image, out=args.out) + shoot_concepts(page, out=args.out)
                    written += shoot_transfer(page, out=args.out) + shoot_audit(page, out=args.out)
                finally:
                    browser.close()
        finally:
            demo.close()
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
