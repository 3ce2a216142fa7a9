"""The concepts panel's handlers, without a browser: CRP's tiles and their channels, DFF's parts in
colour with a legend, a tile's channel shown first in the feature maps, and bad input refused."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from resnet_demo.core.model import STAGES
from resnet_demo.core.render import overlay
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import Analysis, analyze
from resnet_demo.explain.crp import concepts as crp_concepts
from resnet_demo.explain.dff import concept_overlay
from resnet_demo.explain.dff import concepts as dff_concepts
from resnet_demo.ui import concepts_handlers as c

from .conftest import EXAMPLES
from .test_ui_trust import small  # noqa: F401  (the fixture: hostile class names)


@pytest.fixture(scope="module")
def analysis(small: LoadedModel) -> Analysis:  # noqa: F811
    return analyze(image=EXAMPLES / "cat.jpg", model=small, topk=3)


def _select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def test_crp_tiles_are_the_engines_concepts(analysis: Analysis) -> None:
    view = c.concepts_view(analysis, "crp", "layer3", 1, 4, 0.5, progress=lambda *a, **k: None)
    found = crp_concepts(analysis=analysis, stage="layer3", target=1, k=4)
    assert view.concept_channels == [x.channel for x in found] and view.concept_stage == "layer3"
    assert len(view.concept_tiles) == 4
    for (image, caption), x, i in zip(view.concept_tiles, found, range(4), strict=True):
        assert caption == f"#{i + 1} · channel {x.channel} · {x.share:.1%}"
        assert f"#{i + 1} channel {x.channel}: {x.share:.1%}" in view.concept_legend
        expected = overlay(image=analysis.crop, heatmap=x.heatmap, opacity=0.5)
        assert np.array_equal(np.asarray(image), np.asarray(expected))
    # The legend names the class escaped (a class name is data, never markup) and the shares' total.
    assert (
        "&lt;img" in c.concepts_view(analysis, "crp", "layer3", 0, 4, 0.5, progress=lambda *a, **k: None).concept_legend
    )
    assert f"(together {sum(x.share for x in found):.1%})" in view.concept_legend


def test_dff_overlay_and_legend(analysis: Analysis) -> None:
    view = c.concepts_view(analysis, "dff", "layer4", None, 3, 0.6, progress=lambda *a, **k: None)
    result = dff_concepts(analysis=analysis, stage="layer4", k=3, target=analysis.predictions[0].index)
    image, keys = concept_overlay(result=result, image=analysis.crop, opacity=0.6)
    assert len(view.concept_tiles) == 1 + 3 and view.concept_channels == []
    assert np.array_equal(np.asarray(view.concept_tiles[0][0]), np.asarray(image))
    assert [cap for _img, cap in view.concept_tiles[1:]] == [text for _colour, text in keys]
    for (r, g, b), _text in keys:  # each concept's colour in the legend
        assert f"color:#{r:02x}{g:02x}{b:02x}" in view.concept_legend
    earlier = c.concepts_view(analysis, "dff", "layer2", None, 3, 0.6, progress=lambda *a, **k: None)
    assert "named at layer4" in earlier.concept_legend


def test_a_tile_click_shows_its_channel_first(analysis: Analysis) -> None:
    view = c.concepts_view(analysis, "crp", "layer2", None, 3, 0.5, progress=lambda *a, **k: None)
    picked = c.picked_concept(analysis, view.concept_channels, "layer2", _select(2))
    channel = view.concept_channels[2]
    assert len(picked.features) == len(STAGES)
    grid = analysis.feature_maps("layer2", first=[channel])
    image, caption = picked.features[STAGES.index("layer2")]
    assert np.array_equal(np.asarray(image), np.asarray(grid.image)) and f"channel {channel} first" in caption
    assert f"channel **{channel}**" in picked.concept_note
    # DFF's parts mix channels: a click on them changes nothing; nor does a stale index.
    assert c.picked_concept(analysis, [], "layer2", _select(0)) == (gr.skip(), gr.skip())
    assert c.picked_concept(analysis, view.concept_channels, "layer2", _select(9)) == (gr.skip(), gr.skip())


@pytest.mark.parametrize(
    ("kind", "stage", "k", "says"),
    [
        ("nmf", "layer4", 3, "nmf"),
        ("crp", "layer4", 0, "concept"),
        ("dff", "layer4", 17, "DFF takes 2 to 16 concepts"),
        ("dff", "layer4", 1, "DFF takes 2 to 16 concepts"),
        ("crp", "layer9", 3, "layer9"),
    ],
)
def test_bad_requests_get_one_sentence(analysis: Analysis, kind: str, stage: str, k: int, says: str) -> None:
    with pytest.raises(gr.Error, match=says):
        c.concepts_view(analysis, kind, stage, None, k, 0.5, progress=lambda *a, **k: None)


def test_the_button_says_the_expected_time() -> None:
    assert c.concepts_button("resnet152", "dff", "stem")["value"].startswith(f"{c.FIND} (~")
    assert c.concepts_button("resnet50", "nmf", "layer4")["value"] == c.FIND  # the click will say what is wrong


def test_an_lrp_caption_says_where_the_relevance_went(analysis: Analysis) -> None:
    from resnet_demo.explain.lrp import relevance_conservation
    from resnet_demo.ui.map_captions import map_caption

    att = analysis.attribution(method="lrp", target=2)
    caption = map_caption(analysis, att)
    points = relevance_conservation(analysis=analysis, target=2).to_json()["points"]
    assert "Relevance conserved" in caption
    assert (
        f"layer3 {points['layer3']['relevance']:.0%}" in caption
        and f"input {points['input']['relevance']:.0%}" in caption
    )
    assert "Relevance conserved" not in map_caption(analysis, analysis.attribution(method="gradcam", target=2))
