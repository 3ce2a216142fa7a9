"""The architecture view: diagram nodes, shortcuts, hover text, colouring, tables, code.

Models are built on the meta device (shapes, no storage, no forward pass), so these
tests count the network without computing it.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from resnet_demo.core import model as model_module
from resnet_demo.core.complexity import arch_report, macs_by_module, model_complexity, parameter_count
from resnet_demo.core.model import ARCH_DEPTHS, build_model
from resnet_demo.diagram import (
    STAT_CHOICES,
    architecture_figure,
    block_choices,
    block_figure,
    block_infos,
    comparison_table,
    figure_height,
    model_source,
    stage_table,
)
from resnet_demo.transfer.backbone import DILATION, HEAD_INPUTS, READS, reads
from resnet_demo.transfer.weights import MODELS, build_transfer, transfer_spec

ARCHES = list(ARCH_DEPTHS)
ROOT = Path(__file__).resolve().parents[1]


def _trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return found[0]


def _meta_model(arch: str):
    with torch.device("meta"):
        return build_model(arch)


@pytest.mark.parametrize("arch", ARCHES)
def test_one_node_per_block_and_stage_counts(arch: str) -> None:
    fig = architecture_figure(arch=arch)
    names = list(_trace(fig, "bottleneck blocks").customdata)
    assert names == [b.name for b in block_infos(arch)]
    assert len(set(names)) == len(names) == sum(ARCH_DEPTHS[arch])
    per_stage = Counter(n.split(".")[0] for n in names)
    assert tuple(per_stage[f"layer{i}"] for i in range(1, 5)) == ARCH_DEPTHS[arch]
    # No two nodes share a place, and nodes are at least a row apart: labels cannot collide.
    blocks = _trace(fig, "bottleneck blocks")
    points = list(zip(blocks.x, blocks.y, strict=True))
    assert min(math.dist(p, q) for i, p in enumerate(points) for q in points[i + 1 :]) >= 1.0


@pytest.mark.parametrize("arch", ARCHES)
def test_projection_exactly_where_stride_or_width_changes(arch: str) -> None:
    infos = block_infos(arch)
    net = _meta_model(arch)
    for b in infos:
        changes = b.stride != 1 or b.widths[0] != b.widths[3]
        assert b.projection == changes == (b.index == 0), b.name
        assert b.in_shape[0] == b.widths[0] and b.out_shape[0] == b.widths[3]
        module = net.get_submodule(b.name)
        assert (module.downsample is not None) == b.projection
    # layer1.0 projects (64 -> 256 channels) without downsampling; the other first blocks do both.
    firsts = {b.stage: b for b in infos if b.index == 0}
    assert firsts["layer1"].stride == 1 and firsts["layer1"].projection
    assert all(firsts[s].stride == 2 for s in ("layer2", "layer3", "layer4"))

    fig = architecture_figure(arch=arch)
    diamonds = _trace(fig, "projection conv")
    assert len(diamonds.x) == 4
    assert [h.split("</b>")[0].removeprefix("<b>") for h in diamonds.hovertext] == [
        f"layer{i}.0.downsample" for i in range(1, 5)
    ]
    assert list(_trace(fig, "stride 2: halves H and W").customdata) == ["layer2.0", "layer3.0", "layer4.0"]
    # One arc per shortcut: 4 dashed projections, the rest identity (arcs are separated by None).
    assert list(_trace(fig, "projection shortcut (1×1 conv + BN)").x).count(None) == 4
    assert list(_trace(fig, "identity shortcut (x)").x).count(None) == sum(ARCH_DEPTHS[arch]) - 4


@pytest.mark.parametrize(
    ("arch", "block", "expected"),
    [
        (
            "resnet50",
            "layer3.0",
            [
                "stage layer3, block index 0",
                "in 512×28×28 → out 1024×14×14",
                "stride 2",
                "512 → 256 → 256 → 1024",
                "projection",
            ],
        ),
        ("resnet50", "layer1.0", ["in 64×56×56 → out 256×56×56", "stride 1", "64 → 64 → 64 → 256", "projection"]),
        (
            "resnet152",
            "layer3.35",
            ["block index 35 (of 0–35)", "in 1024×14×14 → out 1024×14×14", "1024 → 256 → 256 → 1024", "identity"],
        ),
        ("resnet101", "layer4.2", ["in 2048×7×7 → out 2048×7×7", "2048 → 512 → 512 → 2048", "identity"]),
    ],
)
def test_hover_text_of_known_blocks(arch: str, block: str, expected: list[str]) -> None:
    info = {b.name: b for b in block_infos(arch)}[block]
    blocks = _trace(architecture_figure(arch=arch), "bottleneck blocks")
    hover = blocks.hovertext[list(blocks.customdata).index(block)]
    for text in expected:
        assert text in hover, (text, hover)
    assert f"params {info.params:,}" in hover and f"MACs {info.macs:,}" in hover


def test_known_block_info() -> None:
    b = {b.name: b for b in block_infos("resnet50")}["layer3.0"]
    assert (b.stage, b.index, b.stride, b.projection) == ("layer3", 0, 2, True)
    assert (b.in_shape, b.out_shape, b.widths) == ((512, 28, 28), (1024, 14, 14), (512, 256, 256, 1024))
    # conv1 512*256 + conv2 256*256*9 + conv3 256*1024 + projection 512*1024, plus BN scale and shift.
    convs = 512 * 256 + 256 * 256 * 9 + 256 * 1024 + 512 * 1024
    assert b.params == convs + 2 * (256 + 256 + 1024 + 1024)
    assert b.shortcut_params == 512 * 1024 + 2 * 1024
    assert b.macs == 512 * 256 * 28 * 28 + (256 * 256 * 9 + 256 * 1024 + 512 * 1024) * 14 * 14


def test_shapes_agree_with_a_meta_forward_pass() -> None:
    net = _meta_model("resnet50").eval()
    with torch.no_grad():
        out = net.forward_intermediates(torch.empty(1, 3, 224, 224, device="meta"), blocks=True)
    assert [(b.name, tuple(b.output.shape[1:])) for b in out.blocks] == [
        (b.name, b.out_shape) for b in block_infos("resnet50")
    ]


@pytest.mark.parametrize("arch", ARCHES)
def test_block_params_sum_to_model_minus_stem_and_head(arch: str) -> None:
    net = _meta_model(arch)
    stem_and_head = parameter_count(net.conv1) + parameter_count(net.bn1) + parameter_count(net.fc)
    fig = architecture_figure(arch=arch)
    names = list(_trace(fig, "bottleneck blocks").customdata)
    params = {b.name: b.params for b in block_infos(arch)}
    assert sum(params[n] for n in names) == parameter_count(net) - stem_and_head


def test_stats_colour_the_blocks_with_a_named_colour_bar() -> None:
    names = [b.name for b in block_infos("resnet50")]
    stats = {n: 0.1 * i for i, n in enumerate(names)}
    del stats["layer2.1"]  # a missing value is drawn grey, not invented
    stats["layer9.9"] = 5.0  # a stale name from another architecture is ignored
    fig = architecture_figure(arch="resnet50", stats=stats, stat="residual_ratio")
    blocks = _trace(fig, "bottleneck blocks")
    colours = list(blocks.marker.color)
    assert [c for n, c in zip(names, colours, strict=True) if n != "layer2.1"] == [
        stats[n] for n in names if n != "layer2.1"
    ]
    assert math.isnan(colours[names.index("layer2.1")])
    assert list(_trace(fig, "no value").customdata) == ["layer2.1"]
    given = [stats[n] for n in names if n in stats]
    assert (blocks.marker.cmin, blocks.marker.cmax) == (min(given), max(given))  # the stale 5.0 is not in range
    assert blocks.marker.showscale is True
    label, unit = STAT_CHOICES["residual_ratio"]
    title = blocks.marker.colorbar.title.text
    assert label in title and unit in title
    assert "residual ratio ||F(x)|| / ||x||: 0.3" in blocks.hovertext[3]
    assert "no value" in blocks.hovertext[names.index("layer2.1")]

    fig = architecture_figure(arch="resnet50", stats=stats, stat="mean_activation")
    title = _trace(fig, "bottleneck blocks").marker.colorbar.title.text
    assert all(part in title for part in STAT_CHOICES["mean_activation"])
    with pytest.raises(ValueError, match="Unknown statistic"):
        architecture_figure(arch="resnet50", stats=stats, stat="nope")


@pytest.mark.parametrize("stats", [None, {}])
def test_no_stats_no_colour_bar(stats: dict[str, float] | None) -> None:
    fig = architecture_figure(arch="resnet152", stats=stats)
    assert not any(getattr(t.marker, "showscale", None) for t in fig.data if hasattr(t, "marker"))
    assert "coloraxis" not in fig.to_plotly_json()["layout"]
    # Stages are told apart by colour instead.
    colours = _trace(fig, "bottleneck blocks").marker.color
    assert len(set(colours)) == 4


def test_selected_block_is_highlighted() -> None:
    fig = architecture_figure(arch="resnet152", selected="layer3.17")
    blocks = _trace(fig, "bottleneck blocks")
    i = list(blocks.customdata).index("layer3.17")
    ring = _trace(fig, "selected")
    assert (ring.x[0], ring.y[0]) == (blocks.x[i], blocks.y[i])
    assert list(ring.customdata) == ["layer3.17"]
    # A stale selection (another architecture's block) is ignored, not an error.
    assert not [t for t in architecture_figure(arch="resnet50", selected="layer3.17").data if t.name == "selected"]
    # Only blocks can be selected: a stem node's name draws no ring either.
    assert not [t for t in architecture_figure(arch="resnet50", selected="conv1").data if t.name == "selected"]


@pytest.mark.parametrize("arch", ARCHES)
def test_height_is_always_set_and_backgrounds_transparent(arch: str) -> None:
    fig = architecture_figure(arch=arch)
    assert fig.layout.height == figure_height(arch=arch) > 300
    assert architecture_figure(arch=arch, height=480).layout.height == 480
    assert fig.layout.paper_bgcolor == fig.layout.plot_bgcolor == "rgba(0,0,0,0)"
    assert block_figure(arch=arch, block="layer2.0").layout.height > 300
    # Text colour follows the theme, on both figures.
    assert fig.layout.font.color != architecture_figure(arch=arch, dark=True).layout.font.color


def test_resnet152_figure_json_is_small() -> None:
    names = [b.name for b in block_infos("resnet152")]
    fig = architecture_figure(arch="resnet152", stats={n: 1.0 + i for i, n in enumerate(names)}, selected="layer3.5")
    assert len(fig.to_json().encode()) < 1_000_000
    assert len(block_figure(arch="resnet152", block="layer3.0").to_json().encode()) < 200_000


def test_block_figure_shows_the_real_widths_and_shapes() -> None:
    fig = block_figure(arch="resnet50", block="layer3.0")
    text = " ".join(fig.data[-1].text) + " ".join(fig.data[-1].hovertext)
    text += " ".join(a.text or "" for a in fig.layout.annotations) + fig.layout.title.text
    for part in (
        "512×28×28",
        "256×28×28",
        "256×14×14",
        "1024×14×14",
        "512 → 256",
        "256 → 1024",
        "stride 2",
        "downsample.0",
        "layer3.0.conv2",
        "bn1",
        "relu2",
        "relu3",
        "F(x)",
        "projection",
    ):
        assert part in text, part
    assert "projection" not in block_figure(arch="resnet50", block="layer3.1").layout.title.text
    identity = block_figure(arch="resnet50", block="layer3.1")
    assert "downsample" not in " ".join(identity.data[-1].text)
    with pytest.raises(ValueError, match="no block"):
        block_figure(arch="resnet50", block="layer3.6")


def test_block_choices_follow_the_blocks() -> None:
    choices = block_choices(arch="resnet101")
    assert [v for _, v in choices] == [b.name for b in block_infos("resnet101")]
    assert choices[4 + 3][0] == "layer3.0 · 512→1024, stride 2"


@pytest.mark.parametrize("arch", ARCHES)
def test_stage_table_totals_equal_arch_report(arch: str) -> None:
    rows = stage_table(arch=arch)
    assert [r["stage"] for r in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head", "total"]
    *parts, total = rows
    report = arch_report(arch)
    assert total["params"] == report.params == sum(r["params"] for r in parts)
    assert total["macs"] / 1e9 == pytest.approx(report.gmacs, abs=1e-12)
    assert total["macs"] == sum(r["macs"] for r in parts)
    assert total["blocks"] == sum(ARCH_DEPTHS[arch])
    assert total["weighted_layers"] == int(arch.removeprefix("resnet"))  # why it is called ResNet-50
    assert [r["output_shape"] for r in rows[:6]] == [
        "64×56×56",
        "256×56×56",
        "512×28×28",
        "1024×14×14",
        "2048×7×7",
        "1000",
    ]


def test_comparison_table() -> None:
    rows = {r["arch"]: r for r in comparison_table()}
    assert list(rows) == ARCHES
    r50 = rows["resnet50"]
    assert r50["params"] == r50["params_torchvision"] == 25_557_032
    assert r50["blocks"] == "3-4-6-3" and r50["gmacs_guide"] == 4.1
    assert rows["resnet152"]["gmacs"] == pytest.approx(rows["resnet152"]["gmacs_torchvision"], rel=0.005)


def test_model_source_is_read_from_the_running_module() -> None:
    src = model_source()
    assert "class Bottleneck" in src and "class ResNet" in src and "def conv3x3" in src
    file_text = Path(model_module.__file__).read_text()
    for obj in (model_module.conv3x3, model_module.conv1x1, model_module.Bottleneck, model_module.ResNet):
        chunk = inspect.getsource(obj)
        assert chunk in src and chunk in file_text
    compile(src, "model_source", "exec")  # whole definitions, not fragments


DEFAULT_TRACES = [
    "main path",
    "identity shortcut (x)",
    "projection shortcut (1×1 conv + BN)",
    "projection conv",
    "stem and head",
    "bottleneck blocks",
    "stride 2: halves H and W",
]


def _headers(fig) -> dict[str, str]:
    """Stage name -> its header annotation's text."""
    out = {}
    for a in fig.layout.annotations:
        if a.text and a.text.startswith("<b>"):
            out[a.text.split("</b>")[0].removeprefix("<b>")] = a.text
    return out


def _hover(fig, block: str) -> str:
    blocks = _trace(fig, "bottleneck blocks")
    return blocks.hovertext[list(blocks.customdata).index(block)]


@pytest.mark.parametrize("arch", ARCHES)
def test_default_figure_is_unchanged_by_the_new_options(arch: str) -> None:
    fig = architecture_figure(arch=arch)
    assert [t.name for t in fig.data] == DEFAULT_TRACES
    assert set(fig.layout.meta) == {"arch", "stat", "selected"}
    assert not any("dilation" in (a.text or "") for a in fig.layout.annotations)
    same = architecture_figure(arch=arch, replace_stride_with_dilation=[False, False, False], taps={}, note="")
    assert same == fig


@pytest.mark.parametrize("arch", ARCHES)
def test_dilated_shapes_agree_with_a_meta_forward_pass(arch: str) -> None:
    with torch.device("meta"):
        net = build_model(arch, replace_stride_with_dilation=DILATION).eval()
    with torch.no_grad():
        out = net.forward_intermediates(torch.empty(1, 3, 224, 224, device="meta"), blocks=True)
    infos = block_infos(arch, replace_stride_with_dilation=DILATION)
    assert [(b.name, b.out_shape) for b in infos] == [(b.name, tuple(b.output.shape[1:])) for b in out.blocks]
    plain = {b.name: b for b in block_infos(arch)}
    for b in infos:
        assert b.stride == (2 if b.name == "layer2.0" else 1), b.name
        assert b.dilation == {"layer3": 1 if b.index == 0 else 2, "layer4": 2 if b.index == 0 else 4}.get(b.stage, 1)
        # The same weights, so the same parameters; layer4's maps are 4x4 times larger, so 16x the MACs.
        assert b.params == plain[b.name].params
        if b.stage == "layer4" and b.index > 0:
            assert b.macs == 16 * plain[b.name].macs
    total = macs_by_module(arch, replace_stride_with_dilation=list(DILATION))[""]
    assert total > macs_by_module(arch)[""]
    assert model_complexity(net)[1] == total  # the model's own setting is counted


def test_dilated_figure_hover_headers_and_strides() -> None:
    fig = architecture_figure(arch="resnet50", replace_stride_with_dilation=DILATION)
    for block in ("layer4.0", "layer4.1", "layer4.2"):
        assert "→ out 2048×28×28" in _hover(fig, block), block
    assert "in 512×28×28 → out 1024×28×28" in _hover(fig, "layer3.0")
    assert "stride 1 · dilation 4" in _hover(fig, "layer4.1") and "3×3 dilation 4" in _hover(fig, "layer4.1")
    assert "dilation" not in _hover(fig, "layer3.0")  # the first block keeps the dilation before it: 1
    # Only layer2.0 still halves H and W; the plain network marks all three.
    assert list(_trace(fig, "stride 2: halves H and W").customdata) == ["layer2.0"]
    plain = architecture_figure(arch="resnet50")
    assert list(_trace(plain, "stride 2: halves H and W").customdata) == ["layer2.0", "layer3.0", "layer4.0"]
    headers = _headers(fig)
    assert headers["layer3"].startswith("<b>layer3</b> · dilation 2<br>") and "1024×28×28" in headers["layer3"]
    assert headers["layer4"].startswith("<b>layer4</b> · dilation 4<br>") and "2048×28×28" in headers["layer4"]
    assert "dilation" not in headers["layer2"]
    assert "2048×7×7" in _headers(plain)["layer4"]
    edges = _trace(fig, "stem and head")
    assert "in 2048×28×28" in edges.hovertext[list(edges.customdata).index("avgpool")]
    assert fig.layout.meta["replace_stride_with_dilation"] == [False, True, True]
    with pytest.raises(ValueError, match="three bools"):
        architecture_figure(arch="resnet50", replace_stride_with_dilation=(True, True))


@pytest.mark.parametrize("model", ["deeplabv3", "fasterrcnn", "retinanet_v2"])
def test_taps_mark_only_the_stages_a_head_reads(model: str) -> None:
    taps = HEAD_INPUTS[model]
    fig = architecture_figure(arch="resnet101", taps=dict(reversed(taps.items())))  # order given does not matter
    labels = _trace(fig, "head inputs")
    assert list(labels.customdata) == list(taps) == list(reads(model))
    assert list(labels.text) == [f"<b>→ {reader}</b>" for reader in taps.values()]
    assert [h.split("</b>")[0].removeprefix("<b>") for h in labels.hovertext] == list(taps)
    # One band per tapped stage; every block of a tapped stage inside one, every other block outside all.
    band = _trace(fig, "read by a head")
    xs = [x for x in band.x if x is not None]
    boxes = [(min(xs[i : i + 5]), max(xs[i : i + 5])) for i in range(0, len(xs), 5)]
    assert len(boxes) == len(taps) == list(band.x).count(None)
    blocks = _trace(fig, "bottleneck blocks")
    for name, x in zip(blocks.customdata, blocks.x, strict=True):
        inside = sum(lo < x < hi for lo, hi in boxes)
        assert inside == (name.split(".")[0] in taps), name
    assert [t.name for t in fig.data] == ["read by a head", "head inputs", *DEFAULT_TRACES]
    assert fig.layout.meta["taps"] == taps
    # Room for the labels: a taller figure whose y range reaches further down.
    plain = architecture_figure(arch="resnet101")
    assert fig.layout.height > plain.layout.height
    assert fig.layout.yaxis.range[0] < plain.layout.yaxis.range[0]


def test_taps_and_note_are_text_not_markup() -> None:
    fig = architecture_figure(arch="resnet50", taps={"layer4": "<i>my</i> head & co"}, note="BN <b>frozen</b> & fixed")
    label = _trace(fig, "head inputs").text[0]
    assert "&lt;i&gt;my&lt;/i&gt; head &amp; co" in label and "<i>" not in label
    notes = [a for a in fig.layout.annotations if a.name == "note"]
    assert len(notes) == 1 and notes[0].text == "BN &lt;b&gt;frozen&lt;/b&gt; &amp; fixed"
    assert fig.layout.meta["note"] == "BN <b>frozen</b> & fixed"
    assert fig.layout.margin.t > architecture_figure(arch="resnet50").layout.margin.t
    with pytest.raises(ValueError, match="layer1, layer2, layer3, layer4"):
        architecture_figure(arch="resnet50", taps={"stem": "nothing"})
    with pytest.raises(ValueError, match="no reader"):
        architecture_figure(arch="resnet50", taps={"layer2": " "})


def test_head_inputs_are_torchvisions_return_layers() -> None:
    """The stages each published model's builder returns to its head, and its backbone's dilation."""
    assert {m for models in MODELS.values() for m in models} == set(HEAD_INPUTS) == set(READS)
    for task, models in MODELS.items():
        for model in models:
            spec = transfer_spec(task=task, model=model)
            with torch.device("meta"):
                built = build_transfer(spec)
                ours = build_model(spec.backbone, replace_stride_with_dilation=DILATION if spec.dilated else None)
            body = built.backbone if task == "segment" else built.backbone.body
            assert set(body.return_layers) == set(HEAD_INPUTS[model]), model
            assert READS[model] == tuple(HEAD_INPUTS[model]) == tuple(sorted(body.return_layers))
            convs = {n: (m.stride, m.dilation) for n, m in ours.named_modules() if isinstance(m, torch.nn.Conv2d)}
            assert {n: (m.stride, m.dilation) for n, m in body.named_modules() if n in convs} == convs, model
    with pytest.raises(ValueError, match="Unknown model"):
        reads("yolo")


def _have_png_renderer() -> bool:
    if importlib.util.find_spec("kaleido") is None:
        return False
    return bool(
        os.environ.get("BROWSER_PATH")
        or any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome"))
    )


@pytest.mark.slow
@pytest.mark.skipif(not _have_png_renderer(), reason="PNG rendering needs kaleido and a Chromium")
def test_figures_render_to_png() -> None:
    import plotly.io as pio

    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    names = [b.name for b in block_infos("resnet152")]
    figs = {
        "diagram_resnet152_stats_dark.png": architecture_figure(
            arch="resnet152", stats={n: (i % 7) / 7 for i, n in enumerate(names)}, selected="layer3.20", dark=True
        ),
        "diagram_block_resnet50_layer3.0.png": block_figure(arch="resnet50", block="layer3.0"),
    }
    paths = [out / n for n in figs]
    for p in paths:
        p.unlink(missing_ok=True)
    # kaleido ignores layout.height unless it is passed: render at the height the app will show.
    pio.write_images(list(figs.values()), paths, width=1000, height=[f.layout.height for f in figs.values()])
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
