"""The app's handlers, called directly: no server, no browser."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import PIL.Image
import pytest

from resnet_demo.explain import analyze
from resnet_demo.ui import architecture_handlers, compare_handlers, model_choice
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui import method_menu as menu
from resnet_demo.ui.analysis_store import DISPLAY_MAX, AnalysisStore, stored
from resnet_demo.ui.architecture_handlers import architecture_view
from resnet_demo.ui.components import SafeImage
from resnet_demo.ui.downloads import Downloads
from resnet_demo.ui.markdown_text import md_text
from resnet_demo.ui.temp_files import Limits, disk_usage, sweep

from .conftest import EXAMPLES

CAT = str(EXAMPLES / "cat.jpg")
EXPLAIN_DEFAULTS = ("layer4", "gradcam", 0.5, "crop")


@pytest.fixture
def offline(torch_home: Path) -> Path:
    """An empty weights cache with downloads off: the app falls back to random weights."""
    return torch_home


def explain(image: str | None = CAT, arch: str = "resnet50", weights: str = "imagenet-v2", checkpoint=None, *rest):
    return h.run_explain(image, arch, weights, checkpoint, *(rest or EXPLAIN_DEFAULTS))


def test_explain_outputs_offline(offline: Path) -> None:
    key, top5, status, picker, heat, caption, strip, features, raw = explain()
    assert isinstance(key, str) and stored(key).predictions[0].label == next(iter(top5))  # the state holds a key
    assert len(top5) == 5 and all(isinstance(v, float) for v in top5.values())
    assert sum(top5.values()) <= 1.0 + 1e-6
    assert "UNTRAINED" in status and "resnet50-11ad3fa6.pth" in status
    assert "UNTRAINED" in caption
    assert isinstance(heat, PIL.Image.Image) and heat.size == (224, 224)
    assert [c for _img, c in strip][0].startswith("stem") and len(strip) == 5
    assert len(features) == 5 and features[-1][1].startswith("layer4 · 2048×7×7")
    choices = picker["choices"]
    assert choices[0] == ("Top class", h.TOP_CLASS)
    assert len(choices) == 1 + h.LISTED_CLASSES  # "top class", then the most probable; any other is typed
    probs = stored(key).probabilities()
    assert [probs[v] for _label, v in choices[1:]] == sorted(probs, reverse=True)[: h.LISTED_CLASSES]
    assert h.class_index("tabby", categories=stored(key).categories) == 281  # an unlisted class, typed
    assert np.load(raw).ndim == 2


def test_rerender_other_class_stage_and_full_view(offline: Path) -> None:
    analysis = stored(explain()[0])
    second = analysis.predictions[1]
    caption, strip, raw, fusion, slider = h.rerender(
        analysis, "layer3", second.index, h.NO_VERSUS, "gradcam", 0.3, "full"
    )
    photo, heat = slider  # the slider: the whole photo against the map on it
    assert photo is analysis.image and heat.size == analysis.image.size  # mapped back onto the whole photo
    assert md_text(second.label) in caption and "layer3" in caption  # labels such as "curly-coated" are escaped
    assert np.load(raw).shape == (14, 14)  # layer3's map before upsampling, at 224
    caption_top, *_, slider_top = h.rerender(analysis, "layer3", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.3, "crop")
    assert md_text(analysis.predictions[0].label) in caption_top
    assert slider_top[0] is analysis.crop and slider_top[1].size == analysis.crop.size  # the crop, then the map


def test_a_new_photo_arrives_in_two_steps_the_map_before_the_backward(offline: Path, monkeypatch) -> None:
    grad_module = importlib.import_module("resnet_demo.explain.analyze")
    runs: list[int] = []
    real = grad_module.segment_backward
    monkeypatch.setattr(grad_module, "segment_backward", lambda *a, **k: runs.append(1) or real(*a, **k))
    steps = h.explain_ui(CAT, "resnet50", "imagenet-v2", None, *EXPLAIN_DEFAULTS, None, None)
    first = next(steps)
    assert runs == []  # the top-5 and layer4's map need no backward
    shown = {k for k, v in first._asdict().items() if v != gr.skip()}
    assert shown == {"top5", "status", "caption", "slider"}
    second = next(steps)
    assert runs == [1]  # the strip's one backward, in the second step
    assert {k for k, v in second._asdict().items() if v != gr.skip()} == {
        "analysis", "target", "strip", "fusion", "features", "raw", "versus"
    }  # fmt: skip
    with pytest.raises(StopIteration):
        next(steps)
    page = h.page_after([first, second])
    api = explain()  # /explain: the same analysis in one step
    assert page.top5 == api.top5 and page.caption.split("computed in")[0] == api.caption.split("computed in")[0]
    assert np.array_equal(np.asarray(page.slider[1]), np.asarray(api.heatmap))
    for (tile, label), (api_tile, api_label) in zip(page.strip["value"], api.strip, strict=True):
        assert label == api_label and np.array_equal(np.asarray(tile), np.asarray(api_tile))
    assert [c for _i, c in page.features] == [c for _i, c in api.features]


def test_another_stage_draws_the_map_alone(offline: Path) -> None:
    analysis = stored(explain()[0])
    args = (analysis, "layer3", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "crop")
    caption, raw, slider = h.restage(*args)  # the strip and the fused map stand as they were: not outputs
    full = h.rerender(*args)
    assert np.array_equal(np.asarray(slider[1]), np.asarray(full.slider[1])) and "layer3" in caption
    assert slider[0] is analysis.crop and np.load(raw).shape == (14, 14)


def test_the_map_at_each_stage_is_the_strips_tile(offline: Path) -> None:
    # The browser draws another stage from the strip's tile before the server answers (browser_views):
    # the server's map must be that tile, pixel for pixel, for any class and opacity the strip shows.
    analysis = stored(explain()[0])
    second = analysis.predictions[1].index
    strip = h.rerender(analysis, "layer4", second, h.NO_VERSUS, "gradcam", 0.35, "crop").strip["value"]
    tiles = {caption.split(" ")[0]: np.asarray(tile) for tile, caption in strip}
    for stage in ("stem", "layer1", "layer2", "layer3", "layer4"):
        _caption, _raw, (crop, heat) = h.restage(analysis, stage, second, h.NO_VERSUS, "gradcam", 0.35, "crop")
        assert crop is analysis.crop and np.array_equal(np.asarray(heat), tiles[stage]), stage
    # The whole photo's map is not a tile: there the browser leaves the map to the server.
    *_, (_photo, whole) = h.restage(analysis, "layer3", second, h.NO_VERSUS, "gradcam", 0.35, "full")
    assert whole.size != PIL.Image.fromarray(tiles["layer3"]).size


def test_pretrained_status(fake_pretrained) -> None:
    fake_pretrained("resnet50", "imagenet-v2")
    status = model_choice.weights_status("resnet50", "imagenet-v2", None)
    assert "ImageNet V2" in status and "80.9%" in status and "UNTRAINED" not in status


def test_banner_is_one_line_and_its_details_behind_a_disclosure(offline: Path) -> None:
    line, details = model_choice.weights_status("resnet50", "imagenet-v2", None).split("\n", 1)
    assert "UNTRAINED" in line and "Pretrained weights unavailable" in line and ".pth" not in line
    assert details.startswith("<details><summary>details</summary>\n\n") and details.endswith("\n\n</details>")
    assert "resnet50-11ad3fa6.pth" in details and "Weights menu" in details  # why, and what to do here
    chosen = model_choice.weights_status("resnet50", "random", None)
    assert "UNTRAINED" in chosen and "\n" not in chosen  # random weights picked: nothing more to say

    spec = SimpleNamespace(arch="resnet50")
    trained = {"warning": None, "cause": None, "untrained": False, "spec": spec, "status": "fine-tuned: <b>.pth"}
    line, details = model_choice.status_markdown(SimpleNamespace(**trained, source="the <i>file")).split("\n", 1)
    assert line == "✅ **fine-tuned: &lt;b&gt;.pth**"  # a file's name as it is, never HTML
    assert "Weights read from the &lt;i&gt;file." in details and "<i>" not in details
    # A model that does not say where its weights came from: the line alone.
    assert model_choice.status_markdown(SimpleNamespace(**trained)) == line


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "Upload a photo first"),
        (lambda d: _write(d / "notes.jpg", b"this is text, not a photo"), "not an image"),
        (lambda d: _truncated(d / "cut.jpg"), "truncated"),
    ],
)
def test_bad_images_give_a_sentence(offline: Path, tmp_path: Path, make, message: str) -> None:
    with pytest.raises(gr.Error, match=message):
        explain(make(tmp_path))


def test_decompression_bomb_is_refused(offline: Path, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    PIL.Image.new("1", (20000, 20000)).save(path)  # 400 MPixel, a few kB on disk
    with pytest.raises(gr.Error, match="pixels"):
        explain(str(path))
    with pytest.raises(gr.Error, match="pixels"):
        SafeImage(type="filepath", image_mode=None).preprocess(_payload(path))


def test_safe_image_rejects_non_images(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.png", b"\x89PNG but not really")
    with pytest.raises(gr.Error, match="not an image"):
        SafeImage(type="filepath", image_mode=None).preprocess(_payload(path))


def test_swept_upload_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="no longer on the server"):
        SafeImage(type="filepath", image_mode=None).preprocess(_payload(tmp_path / "gone.jpg"))


def test_big_photo_keeps_a_display_copy_and_the_same_answer(offline: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    PIL.Image.open(CAT).resize((2400, 1600)).save(big)
    analysis = stored(explain(str(big))[0])
    assert max(analysis.image.size) == DISPLAY_MAX and analysis.prepared.full_size == (2400, 1600)
    full = analyze(image=str(big), model=analysis.loaded)
    # The model saw the full photo: the same answer as from the photo itself.
    assert [p.index for p in analysis.predictions] == [p.index for p in full.predictions]
    box, scale = analysis.crop_box, DISPLAY_MAX / 2400
    assert (box.left, box.width) == pytest.approx((full.crop_box.left * scale, full.crop_box.width * scale))
    heat = h.rerender(analysis, "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "full").slider[1]
    assert heat.size == analysis.image.size  # the whole-photo view, on the display copy


def test_store_bounds_sessions_and_rebuilds_idle_analyses(offline: Path) -> None:
    store = AnalysisStore(ttl_s=60.0, hot_s=60.0, per_session=2)
    first = stored(explain()[0])
    keys = [store.put(first, session="a") for _ in range(3)]
    assert store.get(keys[0]) is None and store.get(keys[2]) is first  # a session keeps its newest two
    store.hot_s = 0.0
    store.sweep()  # idle: only the prepared photo stays
    again = store.get(keys[2])
    assert again is not first and again.prepared is first.prepared
    assert [(p.index, p.prob) for p in again.predictions] == [(p.index, p.prob) for p in first.predictions]
    assert store.drop_session("a") == 2 and len(store) == 0
    store.ttl_s = 0.0
    key = store.put(first, session="b")
    time.sleep(0.01)
    assert store.get(key) is None and len(store) == 0  # past its time to live: gone


def test_cache_sweep_removes_the_oldest_beyond_the_bounds(tmp_path: Path) -> None:
    paths = []
    for i in range(10):  # each in a folder of its own, as Gradio writes them
        (tmp_path / f"h{i}").mkdir()
        paths.append(_write(tmp_path / f"h{i}" / "image.jpeg", b"x" * 100))
        time.sleep(0.002)  # distinct change times, oldest first
    example = SimpleNamespace(keep_in_cache={str(paths[0])})
    blocks = SimpleNamespace(temp_file_sets=[{str(p) for p in paths}], blocks={1: example})
    gone = sweep(blocks, limits=Limits(max_files=4, min_age_s=0.0), keep={str(paths[1])})
    # The example counts but stays; the kept checkpoint neither counts nor goes; the oldest others go.
    assert gone == 5 and {p.name for p in tmp_path.iterdir()} == {"h0", "h1", "h7", "h8", "h9"}
    assert disk_usage(blocks) == (5, 500)
    assert sweep(blocks, limits=Limits(max_files=1, min_age_s=60.0)) == 0  # nothing that young goes


def test_bad_choices_give_a_sentence(offline: Path) -> None:
    with pytest.raises(gr.Error, match="Upload a .pth checkpoint"):
        explain(CAT, "resnet50", model_choice.UPLOAD, None)
    with pytest.raises(gr.Error, match="Unknown architecture 'resnet18'; choose one of resnet50 \\(ResNet-50\\)"):
        explain(CAT, "resnet18")
    with pytest.raises(gr.Error, match="Unknown stage"):
        explain(CAT, "resnet50", "imagenet-v2", None, "layer9", "gradcam", 0.5, "crop")
    analysis = stored(explain()[0])
    with pytest.raises(gr.Error, match="Class 5000 does not exist"):
        h.rerender(analysis, "layer4", 5000, h.NO_VERSUS, "gradcam", 0.5, "crop")
    with pytest.raises(gr.Error, match="Class 5000 does not exist"):
        h.rerender(analysis, "layer4", h.TOP_CLASS, 5000, "gradcam", 0.5, "crop")
    with pytest.raises(gr.Error, match="Upload a photo first"):
        h.rerender(None, "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "crop")
    # Checked once, in the core, and said in its words wherever the value comes in.
    with pytest.raises(gr.Error, match="Opacity must be between 0 and 1, not 1.5"):
        h.rerender(analysis, "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 1.5, "crop")
    with pytest.raises(gr.Error, match="View must be 'crop' or 'full'"):
        h.rerender(analysis, "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "side")
    with pytest.raises(gr.Error, match="Unknown architecture 'resnet18'"):
        architecture_view(None, "resnet18", "residual_ratio", None)
    with pytest.raises(gr.Error, match="Unknown architecture 'resnet18'"):
        model_choice.use_checkpoint("/x/ft.pth", "resnet18")
    with pytest.raises(gr.Error, match="Unknown weights '/etc/passwd'"):  # a request names no server file
        h.predict(CAT, "resnet50", "/etc/passwd")


def test_corrupt_checkpoint_names_the_file(offline: Path, tmp_path: Path) -> None:
    bad = _write(tmp_path / "mine.pth", b"garbage")
    with pytest.raises(gr.Error, match="mine.pth"):
        explain(CAT, "resnet50", model_choice.UPLOAD, bad)


def test_architecture_view_with_and_without_a_photo(offline: Path) -> None:
    fig, inside, feats, caption = architecture_view(None, "resnet101", "residual_ratio", "layer3.22")
    assert feats is None and "Run a photo" in caption
    assert fig.layout.height and inside.layout.height
    analysis = stored(explain()[0])
    fig, inside, feats, caption = architecture_view(analysis, "resnet50", "residual_ratio", "layer2.0")
    assert isinstance(feats, PIL.Image.Image)
    assert "layer2.0" in caption and "512×28×28" in caption and "residual ratio" in caption
    ratios = {b.name: b.residual_ratio for b in analysis.blocks}
    colored = [
        t for t in fig.data if getattr(t.marker, "color", None) is not None and not isinstance(t.marker.color, str)
    ]
    assert colored, "blocks should be coloured by the photo's statistics"
    assert sorted(np.round(list(colored[0].marker.color), 6)) == sorted(np.round(list(ratios.values()), 6))


def test_compare_three_depths(offline: Path) -> None:
    out = compare_handlers.compare(CAT, "random")
    assert len(out) == 9
    for i, arch in enumerate(("ResNet-50", "ResNet-101", "ResNet-152")):
        label, heat, summary = out[3 * i : 3 * i + 3]
        assert len(label) == 5 and heat.size == (224, 224)
        assert arch in summary and "UNTRAINED" in summary and "GMACs" in summary


def test_predict_api_handler(offline: Path) -> None:
    top5 = h.predict(CAT, "resnet50", "random")
    assert len(top5) == 5 and max(top5.values()) < 1.0


def test_downloads_folder_is_bounded(tmp_path: Path) -> None:
    d = Downloads(keep=5)
    d.dir = tmp_path / "dl"
    paths = [d.save_npy(np.zeros(2), stem=f"m{i}") for i in range(12)]
    assert len(list(d.dir.glob("*.npy"))) == 5
    assert Path(paths[-1]).exists() and not Path(paths[0]).exists()


def test_use_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="No checkpoint yet"):
        model_choice.use_checkpoint(None, "resnet50")
    arch, weights, path, tabs = model_choice.use_checkpoint("/x/ft.pth", "resnet101")
    assert arch == "resnet101" and weights["value"] == model_choice.UPLOAD and path == "/x/ft.pth"


def test_picker_updates() -> None:
    assert model_choice.checkpoint_visibility(model_choice.UPLOAD)["visible"] is True
    assert model_choice.checkpoint_visibility("imagenet-v2")["visible"] is False
    assert model_choice.start_choice(weights="imagenet-v1") == ("imagenet-v1", None)
    assert model_choice.start_choice(weights="/x/ft.pth") == (model_choice.UPLOAD, "/x/ft.pth")
    methods = [value for _label, value in menu.method_picker("resnet152", "layer3")["choices"]]
    assert methods[0] == "gradcam" and len(methods) == len(set(methods))
    blocks, stage_rows = architecture_handlers.arch_changed("resnet101")
    assert blocks["value"] == "layer3.0" and "layer3.22" in [v for _label, v in blocks["choices"]]
    assert stage_rows == architecture_handlers.table_rows(arch="resnet101")[0]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _truncated(path: Path) -> str:
    PIL.Image.open(CAT).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def _payload(path: str | Path):
    from gradio.data_classes import ImageData

    return ImageData(path=str(path), orig_name=Path(path).name)


def test_command_line_defaults_and_spaces_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_demo.ui import parse_args

    args = parse_args([])
    assert (args.host, args.port, args.arch, args.weights, args.device) == (
        "127.0.0.1",
        7860,
        "resnet50",
        "imagenet-v2",
        "auto",  # CUDA when there is a GPU, as a Space with one expects
    )
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = parse_args(["--share"])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 7999, True)


def test_app_refuses_a_missing_gpu_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from resnet_demo.ui import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no CUDA GPU" in err and "\n" not in err


def test_user_errors_show_user_text_literally() -> None:
    """gr.Error renders HTML; a class name from a checkpoint must not become markup."""
    import gradio as gr

    from resnet_demo.core.errors import UserError
    from resnet_demo.ui.components import user_errors

    @user_errors
    def handler() -> None:
        raise UserError("No class matches '<img src=x onerror=alert(1)>'.")

    with pytest.raises(gr.Error) as info:
        handler()
    assert "<img" not in info.value.message and "&lt;img src=x onerror=alert(1)&gt;" in info.value.message


def test_architecture_view_draws_a_slimmed_models_real_widths() -> None:
    import dataclasses

    from resnet_demo.core.model import resnet50
    from resnet_demo.core.weights import load_model
    from resnet_demo.slim import prune_model

    loaded = load_model(arch="resnet50", weights="random")
    model = prune_model(resnet50().eval(), fraction=0.3, criterion="l1")
    analysis = analyze(image=CAT, model=dataclasses.replace(loaded, model=model))
    w1, w2 = model.widths()[3 + 4]  # layer3.0
    assert (w1, w2) == (179, 179)
    fig, inside, _features, _caption = architecture_view(analysis, "resnet50", "residual_ratio", "layer3.0")
    hovers = " ".join(str(t.hovertext or "") + str(t.text or "") for t in fig.data)
    assert f"512 → {w1} → {w2} → 1024" in hovers and "512 → 256 → 256 → 1024" not in hovers
    assert f"{w1}" in " ".join(str(t.text or "") + str(t.hovertext or "") for t in inside.data) + str(inside.layout)


def test_architecture_view_draws_a_checkpoints_own_classes_and_crop(finetuned: Path) -> None:
    import dataclasses

    from resnet_demo.core.weights import load_model
    from resnet_demo.slim import prune_model

    loaded = load_model(arch="resnet50", weights=str(finetuned))  # 3 classes, fine-tuned at 32 px
    slim = dataclasses.replace(loaded, model=prune_model(loaded.model, fraction=0.3, criterion="l1"))
    classes, crop = len(slim.spec.categories), slim.spec.preprocessing.crop_size
    analysis = analyze(image=CAT, model=slim)
    fig, inside, _features, _caption = architecture_view(analysis, "resnet50", "residual_ratio", "layer1.0")
    texts = " ".join(str(t.text or "") + str(t.hovertext or "") for t in fig.data)
    headers = " ".join(a.text for a in fig.layout.annotations)
    assert f"fc {classes}" in texts and f"{classes} classes" in headers
    assert "fc 1000" not in texts and "1000 classes" not in texts + headers  # ImageNet's head
    assert f"3×{crop}×{crop}" in texts and "×224" not in texts + headers and "×56×56" not in texts + headers
    inside_text = " ".join(str(t.text or "") + str(t.hovertext or "") for t in inside.data)
    # layer1.0 takes the stem's output: a quarter of the crop on each side.
    assert f"64×{crop // 4}×{crop // 4}" in inside_text and "×56×56" not in inside_text
