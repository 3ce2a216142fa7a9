"""The Explain tab's new views, called as plain functions: versus, fusion, the method gallery,
the faithfulness and sanity panels, class names shown as text, and bad input as sentences.

A small ResNet (one block per stage, three classes, 64 px crops) keeps every check fast;
its class names are the kind an uploaded checkpoint could carry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.models as tvm
import torchvision.transforms as T
from markdown_it import MarkdownIt
from torch import nn

from resnet_demo.core.model import STAGES, ResNet
from resnet_demo.core.render import overlay
from resnet_demo.core.weights import CHECKPOINT_FORMAT, LoadedModel, Preprocessing, WeightsSpec
from resnet_demo.explain import QUESTIONS, REGISTRY, Analysis, analyze, cheap_methods, quick_methods
from resnet_demo.explain.faithfulness import MAX_STEPS
from resnet_demo.explain.sanity import randomization_check, verdict_step
from resnet_demo.ui import evaluate_api as ev
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui import method_gallery as g
from resnet_demo.ui import method_menu as menu
from resnet_demo.ui import metric_cards_handlers as mc
from resnet_demo.ui import trust_handlers as t
from resnet_demo.ui.analysis_store import stored
from resnet_demo.ui.markdown_text import md_text

from .conftest import EXAMPLES, random_state_dict

CAT = EXAMPLES / "cat.jpg"
HOSTILE = "<img src=x onerror=alert(1)>"
CLASSES = (HOSTILE, "**bold** [link](http://x)", "tabby")
TOP, NONE = h.TOP_CLASS, h.NO_VERSUS
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # Preprocessing's defaults


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    """One bottleneck per stage, three classes with hostile names, random BatchNorm statistics."""
    torch.manual_seed(0)
    model = ResNet((1, 1, 1, 1), num_classes=len(CLASSES))
    g_ = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g_) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g_) + 0.5)
    spec = WeightsSpec(
        arch="resnet50",  # priced as ResNet-50 by the cost estimates; the network itself is small
        name="small.pth",
        label="a generated checkpoint",
        categories=CLASSES,
        preprocessing=Preprocessing(resize_size=73, crop_size=64),
        pretrained=True,
    )
    return LoadedModel(model.eval().requires_grad_(False), spec)


@pytest.fixture
def analysis(small: LoadedModel) -> Analysis:
    return analyze(image=CAT, model=small, topk=3)


def _classes(analysis: Analysis) -> tuple[int, int]:
    """The top class and another one."""
    first, second = (p.index for p in analysis.predictions[:2])
    return first, second


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").render(markdown)


def test_md_text_renders_literally() -> None:
    for name in (HOSTILE, CLASSES[1], "# heading", "a & b", "1. item", "`code`"):
        rendered = _html(md_text(name))
        assert "<img" not in rendered and "<a " not in rendered and "<strong>" not in rendered
        assert "<h1>" not in rendered and "<ol>" not in rendered and "<code>" not in rendered
        plain = rendered.removeprefix("<p>").removesuffix("</p>\n")
        assert plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == name


def test_hostile_class_names_show_as_text_in_every_caption(analysis: Analysis) -> None:
    hostile = CLASSES.index(HOSTILE)
    other = next(i for i in range(len(CLASSES)) if i != hostile)
    caption, *_ = h.rerender(analysis, "layer4", hostile, other, "gradcam", 0.5, "crop")
    assert "&lt;img src\\=x onerror\\=alert\\(1\\)&gt;" in caption
    rendered = _html(caption)
    assert "<img" not in rendered and "<a href" not in rendered
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered  # shown to the user exactly as named
    assert "**bold** [link](http://x)" in rendered  # literally, not as bold text and a link
    fig, summary = t.faithfulness_panel(analysis, "layer4", hostile, NONE, "gradcam", 4)
    assert "<img" not in _html(summary) and "&lt;img" in _html(summary)


def test_versus_caption_and_map(analysis: Analysis) -> None:
    first, second = _classes(analysis)
    caption, strip, raw, fusion, (_crop, heat) = h.rerender(analysis, "layer3", first, second, "gradcam", 0.5, "crop")
    assert f"**{md_text(CLASSES[first])}** versus **{md_text(CLASSES[second])}**" in caption
    contrastive = analysis.attribution(stage="layer3", target=first, method="gradcam", versus=second)
    plain = analysis.attribution(stage="layer3", target=first, method="gradcam")
    assert contrastive.versus == second and not np.array_equal(contrastive.heatmap, plain.heatmap)
    assert np.array_equal(np.load(raw), contrastive.raw)  # the file is the contrastive map
    assert f"-class{first}-vs{second}-" in Path(raw).name
    with pytest.raises(gr.Error, match="cannot be explained against itself"):
        h.rerender(analysis, "layer3", first, first, "gradcam", 0.5, "crop")


def test_class_agnostic_method_drops_versus_and_says_so(analysis: Analysis) -> None:
    first, second = _classes(analysis)
    caption, *_ = h.rerender(analysis, "layer4", first, second, "eigencam", 0.5, "crop")
    assert "Eigen-CAM" in caption and "ignores the class" in caption and "versus **" not in caption


def test_fusion_is_the_max_of_the_strip_maps(analysis: Analysis) -> None:
    first, second = _classes(analysis)
    fusion = h.rerender(analysis, "layer2", first, second, "layercam", 1.0, "crop").fusion  # the map alone
    maps = analysis.attributions(stages=STAGES, target=first, method="layercam", versus=second)
    expected = np.max(np.stack([m.heatmap for m in maps.values()]), axis=0)
    fused = analysis.fusion(target=first, method="layercam", versus=second)
    assert fused.stage == "fusion" and np.allclose(fused.heatmap, expected, atol=1e-6)
    [(image, caption)] = fusion
    assert caption == "LayerCAM fused" and isinstance(image, PIL.Image.Image)
    assert np.array_equal(np.asarray(image), np.asarray(overlay(image=analysis.crop, heatmap=fused.heatmap, opacity=1)))


def test_strip_follows_a_quick_method_and_falls_back_to_gradcam(analysis: Analysis) -> None:
    _caption, strip, _raw, fusion, _slider = h.rerender(analysis, "layer4", TOP, NONE, "gradcam++", 0.5, "crop")
    assert strip["label"].startswith("Grad-CAM++") and [c for _i, c in strip["value"]][0].startswith("stem")
    _caption, strip, _raw, fusion, _slider = h.rerender(analysis, "layer4", TOP, NONE, "cam", 0.5, "crop")
    assert strip["label"].startswith("Grad-CAM at") and fusion[0][1] == "Grad-CAM fused"  # CAM: layer4 only


def test_unsupported_stage_is_a_sentence_and_the_picker_moves(analysis: Analysis) -> None:
    with pytest.raises(gr.Error, match="layer4"):
        h.rerender(analysis, "layer3", TOP, NONE, "cam", 0.5, "crop")
    assert menu.method_changed("cam", "layer3") == "layer4"
    assert menu.method_changed("cam", "layer4") == gr.skip()  # nothing to change
    assert menu.method_changed("gradcam", "stem") == gr.skip()
    with pytest.raises(gr.Error, match="Unknown method"):
        menu.method_changed("no-such-method", "layer4")


def test_method_picker_lists_the_registry_with_costs_and_limits() -> None:
    choices = menu.method_choices(arch="resnet152", stage="layer4")
    assert sorted(v for _label, v in choices) == sorted(REGISTRY)
    labels = dict((v, label) for label, v in choices)
    # Grouped by the question the map answers, in QUESTIONS' order, each label saying its group.
    groups = [REGISTRY[v].answers for _label, v in choices]
    assert groups == sorted(groups, key=list(QUESTIONS).index)
    assert all(label.startswith(REGISTRY[v].answers.capitalize() + " · ") for label, v in choices)
    assert labels["guided-gradcam"].startswith("Which pixels · ")
    assert "(layer4 only)" in labels["cam"]
    assert "s here)" in labels["scorecam"] and "s here)" not in labels["gradcam"]


def test_method_gallery_shows_every_quick_method(analysis: Analysis) -> None:
    first, second = _classes(analysis)
    update = g.method_gallery(analysis, True, "layer3", first, second, 0.5)
    tiles = update["value"]
    assert update["visible"] is True and len(tiles) == len(quick_methods())
    captions = dict(zip(quick_methods(), (c for _img, c in tiles), strict=True))
    assert captions["cam"] == "CAM: not available at layer3 (layer4 only)"
    assert "ignores the class" in captions["eigencam"]
    assert captions["layercam"].startswith("LayerCAM · ")
    assert all(img.size == analysis.crop.size for img, _c in tiles)
    for name, (img, _c) in zip(quick_methods(), tiles, strict=True):
        if name != "cam":  # each tile is that method's own contrastive map (Eigen-CAM's plain one)
            v = second if REGISTRY[name].class_specific else None
            heat = analysis.attribution(stage="layer3", target=first, method=name, versus=v).heatmap
            assert np.array_equal(np.asarray(img), np.asarray(overlay(image=analysis.crop, heatmap=heat, opacity=0.5)))
    assert g.method_gallery(analysis, False, "layer3", first, second, 0.5) == {"__type__": "update", "visible": False}
    with pytest.raises(gr.Error, match="Upload a photo first"):
        g.method_gallery(None, True, "layer3", TOP, NONE, 0.5)


def test_faithfulness_panel(analysis: Analysis) -> None:
    fig, summary = t.faithfulness_panel(analysis, "layer4", TOP, NONE, "gradcam", 4)
    assert fig.layout.height and len(fig.data) == 4  # deletion and insertion, of the map and of a random map
    aucs = [float(x) for x in re.findall(r"AUC \*\*([0-9.]+)\*\*", summary)]
    assert len(aucs) == 2 and all(0.0 <= a <= 1.0 for a in aucs)
    assert "Grad-CAM" in summary and "4 steps" in summary and "random map" in summary
    assert "the crop blurred" in summary  # the default baseline, named
    _fig, mean = t.faithfulness_panel(analysis, "layer4", TOP, NONE, "gradcam", 4, "mean")
    assert "the crop's mean colour" in mean and "blurred" not in mean
    assert re.findall(r"AUC \*\*([0-9.]+)\*\*", mean) != re.findall(r"AUC \*\*([0-9.]+)\*\*", summary)
    with pytest.raises(gr.Error, match="Unknown baseline"):
        t.faithfulness_panel(analysis, "layer4", TOP, NONE, "gradcam", 4, "grey")
    with pytest.raises(gr.Error, match="steps"):
        t.faithfulness_panel(analysis, "layer4", TOP, NONE, "gradcam", 0)
    with pytest.raises(gr.Error, match="Upload a photo first"):
        t.faithfulness_panel(None, "layer4", TOP, NONE, "gradcam", 4)


def test_ranking_panel_ranks_the_quick_methods(analysis: Analysis) -> None:
    rows, note = t.ranking_panel(analysis, "layer4", TOP, NONE, 4)
    ranked, chance = rows[:-1], rows[-1]
    assert len(ranked) == len(quick_methods())  # every quick method works at layer4
    assert [r[0] for r in ranked] == [str(i) for i in range(1, len(ranked) + 1)]
    scores = [float(r[4]) for r in ranked]
    assert all(float(r[4]) == pytest.approx(float(r[2]) - float(r[3]), abs=2e-3) for r in rows)
    assert scores == sorted(scores, reverse=True)
    assert chance[1] == "random map (chance)" and "insertion AUC − deletion AUC" in note
    rows3, _ = t.ranking_panel(analysis, "layer3", TOP, NONE, 4)
    assert "CAM" not in [r[1] for r in rows3]  # CAM has no layer3 map
    assert "the crop blurred" in note
    mean_rows, mean_note = t.ranking_panel(analysis, "layer4", TOP, NONE, 4, "mean")
    assert "the crop's mean colour" in mean_note and len(mean_rows) == len(rows)
    gradcam = t.faithfulness(analysis, attribution=analysis.attribution(stage="layer4"), steps=4, baseline="mean")
    assert next(r[4] for r in mean_rows if r[1] == "Grad-CAM") == f"{gradcam.score:+.3f}"  # ranked on that baseline


def test_sanity_panel(analysis: Analysis, small: LoadedModel) -> None:
    before = {k: v.clone() for k, v in small.model.state_dict().items()}
    tiles, verdict = t.sanity_panel(analysis, "gradcam", "layer4", TOP, NONE, 0.5)
    assert len(tiles) == 6 and tiles[0][1] == "original"
    assert [c.split(":")[0] for _img, c in tiles[1:]] == ["+ fc", "+ layer4", "+ layer3", "+ layer2", "+ layer1"]
    check = randomization_check(analysis, stage="layer4", method="gradcam")  # cached: the same result
    for (_img, caption), step in zip(tiles[1:], check.steps, strict=True):
        assert caption.endswith("all zero" if step.all_zero else f"ρ = {step.correlation:.2f}")
    assert (
        verdict.startswith(f"**{check.verdict[0].upper()}")
        and f"{check.steps[verdict_step(check.stage)].correlation:.2f}" in verdict
    )
    assert all(torch.equal(v, small.model.state_dict()[k]) for k, v in before.items())  # the shared model untouched


def test_trust_buttons_say_the_time_before_a_check(analysis: Analysis) -> None:
    plain = t.trust_buttons(None, "layer4", "gradcam", NONE, 16)
    assert [b["value"] for b in plain] == [t.FAITH_LABEL, t.RANK_LABEL, t.SANITY_LABEL]
    faith, rank, sanity = (b["value"] for b in t.trust_buttons(analysis, "layer4", "gradcam", NONE, 16))
    assert faith.startswith(t.FAITH_LABEL + " (") and rank.startswith(t.RANK_LABEL + " (~")
    assert sanity.startswith(t.SANITY_LABEL + " (") and sanity.endswith("\u00a0s)")
    cost16 = t.expected_seconds(analysis, stage="layer4", method="gradcam", versus=None, steps=16)
    cost4 = t.expected_seconds(analysis, stage="layer4", method="gradcam", versus=None, steps=4)
    assert cost4["faithfulness"] < cost16["faithfulness"] < cost16["ranking"]


def test_a_new_photo_updates_the_panel_in_one_request(analysis: Analysis) -> None:
    from resnet_demo.ui.trust_panel import PhotoFollowup, photo_followup

    key = "a-key"
    hidden = photo_followup(analysis, "layer4", "gradcam", NONE, 16, ["road"], False, False)
    assert isinstance(hidden, PhotoFollowup)
    buttons = t.trust_buttons(analysis, "layer4", "gradcam", NONE, 16)
    assert [hidden.faith_button, hidden.rank_button, hidden.sanity_button] == list(buttons)
    assert hidden.cards_button == mc.cards_button(analysis, "layer4", "gradcam", 16, ["road"], False)
    assert hidden.cards_button["value"].startswith(mc.CARDS_LABEL + " (")  # the time for this photo
    assert t.TrustResults(*(getattr(hidden, f) for f in t.TrustResults._fields)) == t.TrustResults()
    assert hidden.gallery_due == gr.skip()  # a hidden gallery is not computed for a new photo
    assert photo_followup(key, "layer4", "gradcam", NONE, 16, [], False, True).gallery_due == key


def test_a_new_photo_fires_one_follow_up_request_and_the_gallery_only_while_shown() -> None:
    from resnet_demo.ui import build_demo
    from resnet_demo.ui.method_gallery import method_gallery
    from resnet_demo.ui.trust_panel import photo_followup

    demo = build_demo(weights="random")
    fns = list(demo.fns.values())
    photo = [f for f in fns if getattr(f.fn, "__name__", "") in ("explain_ui", "after_example")]
    assert len(photo) == 2, "the page's events for a new photo: an upload, an example"
    for event in photo:
        after = [f for f in fns if f.trigger_after == event._id]
        on_server = [f for f in after if f.fn is not None]
        assert [f.fn for f in on_server] == [photo_followup]
    gallery = [f for f in fns if getattr(f.fn, "__wrapped__", f.fn) is method_gallery]
    assert len(gallery) == 1
    due = [t_ for t_ in gallery[0].targets if t_[1] == "change" and demo.blocks[t_[0]].stateful]
    assert len(due) == 1, "the gallery is computed when a new photo's key is due while it shows"


def test_evaluate_handler_and_its_errors(analysis: Analysis, small: LoadedModel, monkeypatch) -> None:
    monkeypatch.setattr(ev, "resolve_model", lambda **kw: small)
    monkeypatch.setattr(ev, "DEFAULT_STEPS", 4)
    first, second = _classes(analysis)
    out = ev.evaluate(str(CAT), "resnet50", "upload", "small.pth", "layer3", "gradcam", str(first), CLASSES[second])
    assert out["map"] == {
        "method": "gradcam", "stage": "layer3", "target": first, "target_label": CLASSES[first],
        "versus": second, "versus_label": CLASSES[second],
    }  # fmt: skip
    faith = out["faithfulness"]
    assert faith["steps"] == 4 and all(0.0 <= faith[k] <= 1.0 for k in faith if k.endswith("auc"))
    assert faith["baseline"] == "blur"  # the default when a script passes the first eight
    mean = ev.evaluate(str(CAT), "resnet50", "upload", "small.pth", "layer3", "gradcam", str(first), "", "mean")
    assert mean["faithfulness"]["baseline"] == "mean"
    with pytest.raises(gr.Error, match="Unknown baseline 'grey'"):
        ev.evaluate(str(CAT), "resnet50", "upload", "small.pth", "layer4", "gradcam", "", "", "grey")
    assert out["ranking"]["methods"] and "eigencam" not in [m["method"] for m in out["ranking"]["methods"]]
    # The one-shot check ranks the cheap methods, as it always did (and is priced so); the panel, every quick one.
    assert {m["method"] for m in out["ranking"]["methods"]} <= set(cheap_methods())
    ranked = t.expected_seconds(analysis, stage="layer3", method="gradcam", versus=None, steps=16)["ranking"]
    cheap = t.expected_seconds(analysis, stage="layer3", method="gradcam", versus=None, steps=16, quick=False)
    assert cheap["ranking"] < ranked
    assert [s["randomized"] for s in out["sanity"]["steps"]] == ["fc", "layer4", "layer3", "layer2", "layer1"]
    assert set(out["timings"]) == {"analysis", "faithfulness", "ranking", "sanity", "total"}
    assert json.loads(json.dumps(out)) == out  # JSON-able as it is
    with pytest.raises(gr.Error, match="No class matches"):
        ev.evaluate(str(CAT), "resnet50", "upload", "small.pth", "layer4", "gradcam", "zebra", "")
    with pytest.raises(gr.Error, match="layer4"):
        ev.evaluate(str(CAT), "resnet50", "upload", "small.pth", "layer2", "cam", "", "")
    with pytest.raises(gr.Error, match="Send an image"):
        ev.evaluate(None, "resnet50", "upload", "small.pth", "layer4", "gradcam", "", "")


def test_evaluate_handler_loads_an_uploaded_checkpoint(tmp_path: Path, torch_home: Path, monkeypatch) -> None:
    # The real loader on a real file: a ResNet-50 checkpoint with three (hostile) class names at 64 px.
    monkeypatch.setattr(ev, "DEFAULT_STEPS", 4)  # fewer curve points; the loading is untouched
    state = random_state_dict("resnet50", seed=4, num_classes=len(CLASSES))
    ckpt = tmp_path / "three.pth"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "arch": "resnet50", "model": state, "class_names": list(CLASSES),
         "preprocessing": Preprocessing(resize_size=73, crop_size=64).to_dict()},
        ckpt,
    )  # fmt: skip
    out = ev.evaluate(str(CAT), "resnet50", "upload", str(ckpt), "layer4", "gradcam", "", "")
    assert out["model"] == {"arch": "resnet50", "weights": "fine-tuned: three.pth", "untrained": False}
    # The top class is the file's: torchvision's ResNet-50 with the same weights on the same crop.
    reference = tvm.resnet50(num_classes=len(CLASSES))
    reference.load_state_dict(state)
    crop = T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    with torch.no_grad():
        top = int(reference.eval()(crop(PIL.Image.open(CAT).convert("RGB"))[None]).argmax())
    assert (out["map"]["target"], out["map"]["target_label"]) == (top, CLASSES[top])
    assert [s["randomized"] for s in out["sanity"]["steps"]] == ["fc", "layer4", "layer3", "layer2", "layer1"]

    # A file that does not fit is the reason, naming the file and not the server's folder.
    torch.save({"fc.weight": torch.zeros(3, 5)}, tmp_path / "misfit.pth")
    with pytest.raises(gr.Error, match="misfit.pth does not fit resnet50") as e:
        ev.evaluate(str(CAT), "resnet50", "upload", str(tmp_path / "misfit.pth"), "layer4", "gradcam", "", "")
    assert str(tmp_path) not in str(e.value.message)


def test_new_photo_resets_versus_and_fuses_in_one_event(small: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "resolve_model", lambda **_kwargs: small)
    steps = h.explain_ui(str(CAT), "resnet50", "upload", "small.pth", "layer4", "layercam", 0.5, "crop", progress=None)
    key, _top5, _status, _classes, _heat, _caption, strip, _features, _raw, picker, fusion, slider = h.page_after(steps)
    assert strip["label"] == "LayerCAM at every stage, same class" and len(strip["value"]) == len(STAGES)
    assert picker["value"] == NONE and picker["choices"][0][1] == NONE
    assert {v for _label, v in picker["choices"][1:]} == set(range(len(CLASSES)))
    assert [c for _img, c in fusion] == ["LayerCAM fused"]
    assert stored(key).loaded is small
    assert slider[0] is stored(key).crop and slider[1].size == stored(key).crop.size  # the photo against its map


def test_progress_reaches_the_bar_for_expensive_methods(analysis: Analysis) -> None:
    seen: list[tuple[float, str]] = []

    def bar(fraction: float, desc: str | None = None) -> None:
        seen.append((fraction, desc or ""))

    h.rerender(analysis, "layer4", TOP, NONE, "ablationcam", 0.5, "crop", progress=bar)
    assert seen and seen[-1][0] == pytest.approx(1.0) and all("Ablation-CAM" in d for _f, d in seen)
    assert [f for f, _d in seen] == sorted(f for f, _d in seen)


def test_explain_tab_builds_with_api_endpoints_unchanged() -> None:
    with gr.Blocks() as demo:
        from resnet_demo.ui.explain_tab import build_explain_tab

        build_explain_tab(arch="resnet50", weights="random", checkpoint=None, status=gr.Markdown(), analysis=gr.State())
    api = {d.api_name: d for d in demo.fns.values() if d.api_name and d.api_visibility == "public"}
    assert {"explain", "predict", "evaluate"} <= set(api)
    assert [c.label for c in api["explain"].inputs] == [
        "Photo", "Model", "Weights", "Fine-tuned checkpoint (.pth)", "Stage", "Method", "Heat-map opacity", "Show on",
    ]  # fmt: skip
    assert len(api["evaluate"].inputs) == 12 and len(api["explain"].outputs) == 9
    baseline = api["evaluate"].inputs[8]  # ninth, so that the first eight keep their places
    # Then the metric cards' inputs, empty by default: existing scripts get the same answers.
    assert [c.label.split(" ")[0] for c in api["evaluate"].inputs[9:]] == ["metrics", "box", "object"]
    assert all(c.value in ("", None) for c in api["evaluate"].inputs[9:])
    assert isinstance(baseline, gr.Radio) and baseline.value == "blur"
    assert [v for _label, v in baseline.choices] == ["blur", "mean"]
    panels = {d.name: d for d in demo.fns.values() if d.name in ("faithfulness_panel", "ranking_panel")}
    assert all(d.inputs[-1] is baseline for d in panels.values()) and len(panels) == 2  # the panel's own radio


def test_crop_sizes_of_tiles(analysis: Analysis) -> None:
    # The gallery's "not available" tile is the photo dimmed: same size, never brighter than the crop.
    tiles = g.gallery_tiles(analysis, stage="layer3", target=None, versus=None, opacity=0.5)
    tile = next(image for image, caption in tiles if "not available" in caption)  # CAM: layer4 only
    assert tile.size == analysis.crop.size
    assert np.asarray(tile).mean() < np.asarray(analysis.crop.convert("L")).mean()


# ----------------------------------------------------------------------------- crafted values and typed classes


def test_steps_that_are_no_whole_number_in_range_get_one_sentence(analysis: Analysis) -> None:
    # What a crafted request may send for the slider: the core's sentence, never a server error.
    for steps in (float("nan"), float("inf"), 4.5, "16", None, 0, MAX_STEPS + 1):
        for handler, args in (
            (t.trust_buttons, (analysis, "layer4", "gradcam", NONE, steps)),
            (t.faithfulness_panel, (analysis, "layer4", TOP, NONE, "gradcam", steps)),
            (t.ranking_panel, (analysis, "layer4", TOP, NONE, steps)),
        ):
            with pytest.raises(gr.Error) as refused:
                handler(*args)
            expected = f"The number of steps must be a whole number from 1 to {MAX_STEPS}, not {steps}."
            assert refused.value.message == expected
    _fig, summary = t.faithfulness_panel(analysis, "layer4", TOP, NONE, "gradcam", 4.0)  # what the slider sends
    assert "4 steps" in summary


def test_a_typed_class_is_found_and_a_typo_names_the_closest(analysis: Analysis) -> None:
    tabby = CLASSES.index("tabby")
    _fig, summary = t.faithfulness_panel(analysis, "layer4", "Tabby", NONE, "gradcam", 4)
    assert "class **tabby**" in summary
    tiles, _verdict = t.sanity_panel(analysis, "gradcam", "layer4", str(tabby), NONE, 0.5)
    assert len(tiles) == 6
    with pytest.raises(gr.Error) as typo:
        t.faithfulness_panel(analysis, "layer4", "tabbby", NONE, "gradcam", 4)
    assert typo.value.message.startswith(f"No class matches 'tabbby'. Did you mean {tabby} (tabby)?")
    with pytest.raises(gr.Error, match=f"Did you mean {tabby} \\(tabby\\)"):
        t.ranking_panel(analysis, "layer4", TOP, "tabbby", 4)


def test_class_pickers_take_typed_text_instead_of_listing_every_class() -> None:
    from resnet_demo.ui.explain_tab import build_explain_tab

    with gr.Blocks():
        tab = build_explain_tab(
            arch="resnet50", weights="random", checkpoint=None, status=gr.Markdown(), analysis=gr.State()
        )
    # Gradio's own check would refuse the text with every choice's value in its message.
    assert tab.target.preprocess("tabbby") == "tabbby" and tab.versus.preprocess("zebr") == "zebr"


def test_a_class_typo_gets_the_command_lines_sentence(tmp_path: Path, torch_home: Path, capsys) -> None:
    from resnet_demo.__main__ import main
    from resnet_demo.core.weights import load_model

    imagenet = analyze(image=CAT, model=load_model(arch="resnet50", weights="random"), topk=3)
    argv = ["explain", str(CAT), "--weights", "random", "--target", "persain cat", "--out", str(tmp_path)]
    assert main(argv) == 2
    cli = capsys.readouterr().err.strip().removeprefix("error: ")
    with pytest.raises(gr.Error) as app:
        t.faithfulness_panel(imagenet, "layer4", "persain cat", NONE, "gradcam", 4)
    assert app.value.message == cli
    assert "283 (Persian cat)" in cli and cli.count("(") <= 3  # a few close names, not the 1,000 classes


# ----------------------------------------------------------------------------- metric cards


def test_metric_cards_panel(analysis: Analysis) -> None:
    from resnet_demo.explain.metric_cards import Settings, metric_cards
    from resnet_demo.explain.pointing import box_mask

    names = ["confidence", "sparseness", "complexity", "pointing", "energy-pointing"]  # in the cards' order
    rows, fig, note = mc.metric_cards_panel(
        analysis, "layer4", TOP, NONE, "gradcam", 4, "blur", names, "100,50,300,250", "", False
    )
    assert [r[0] for r in rows] == names and len(rows[0]) == len(mc.CARD_HEADERS)
    att = analysis.attribution(stage="layer4")
    mask = box_mask(analysis.prepared, (100, 50, 300, 250))
    engine = metric_cards(analysis, attribution=att, metrics=names, object_mask=mask, settings=Settings(steps=4))
    for row in rows:
        card = engine.cards[row[0]]
        assert row[1] == mc._cell(card.value) and row[2] == mc._cell(card.random)
        assert row[3] == {True: "better", False: "worse", None: "n/a"}[card.better_than_random]
    assert fig.layout.height and len(fig.data) == 2  # this map and the random map, a bar per metric each
    assert list(fig.data[0].x) == names and all(0 <= y <= 1 for y in fig.data[0].y if y is not None)
    # Without an object, the pointing games are named as skipped only when every metric is asked for.
    everything = [*names, "road", "max-sensitivity", "random-logit", "deletion", "insertion"]
    with pytest.raises(gr.Error, match="needs the object"):
        mc.metric_cards_panel(analysis, "layer4", TOP, NONE, "gradcam", 4, "blur", names, "", "", False)
    _rows, compared, _note = mc.metric_cards_panel(
        analysis, "layer4", TOP, NONE, "gradcam", 4, "blur", ["sparseness", "complexity"], "", "", True
    )
    assert len(compared.data) == len(quick_methods()) + 1  # every quick method at layer4, and the random map
    assert len(everything) == len(mc.parse_metrics("all")[0])


@pytest.mark.parametrize(
    ("box", "object_class", "metrics", "words"),
    [
        ("300,50,100,250", "", ["pointing"], "inverted"),
        ("100,50,100,250", "", ["pointing"], "no area"),
        ("100,50,900,250", "", ["pointing"], "outside the photo"),
        ("", "unicorn", ["pointing"], "does not know 'unicorn'"),
        ("1,1,50,50", "cat", ["pointing"], "not both"),
        ("", "", [], "at least one metric"),
    ],
)
def test_metric_cards_bad_input_is_one_sentence(analysis: Analysis, box, object_class, metrics, words) -> None:
    with pytest.raises(gr.Error, match=words):
        mc.metric_cards_panel(analysis, "layer4", TOP, NONE, "gradcam", 4, "blur", metrics, box, object_class, False)


def test_cards_button_says_the_time(analysis: Analysis) -> None:
    assert mc.cards_button(None, "layer4", "gradcam", 16, ["road"], False)["value"] == mc.CARDS_LABEL
    one = mc.cards_button(analysis, "layer4", "gradcam", 16, ["road", "deletion"], False)["value"]
    assert one.startswith(mc.CARDS_LABEL + " (")
    few = mc.cards_seconds(analysis, stage="layer4", method="gradcam", metrics=["sparseness", "road"], steps=16)
    more = mc.cards_seconds(analysis, stage="layer4", method="gradcam", metrics="all", steps=16, maps=3)
    assert 0 < few < more


def test_evaluate_gains_metric_cards(analysis: Analysis, small: LoadedModel, monkeypatch) -> None:
    monkeypatch.setattr(ev, "resolve_model", lambda **kw: small)
    monkeypatch.setattr(ev, "DEFAULT_STEPS", 4)
    args = (str(CAT), "resnet50", "upload", "small.pth", "layer4", "gradcam", "", "")
    plain = ev.evaluate(*args)
    assert "metrics" not in plain  # the defaults: today's answer
    out = ev.evaluate(*args, "blur", "sparseness,pointing,energy-pointing", "100,50,300,250", "")
    cards = out["metrics"]["cards"]
    assert list(cards) == ["sparseness", "pointing", "energy-pointing"] and out["metrics"]["skipped"] == {}
    assert cards["pointing"]["better"] == "higher" and cards["sparseness"]["range"] == "[0, 1]"
    assert set(cards["sparseness"]) >= {"value", "random_value", "better_than_random", "cost_forwards", "reference"}
    assert plain["faithfulness"] == out["faithfulness"]  # the rest unchanged
    with pytest.raises(gr.Error, match="inverted"):
        ev.evaluate(*args, "blur", "pointing", "300,50,100,250", "")
    with pytest.raises(gr.Error, match="Unknown metric"):
        ev.evaluate(*args, "blur", "pointing,roads", "", "")
