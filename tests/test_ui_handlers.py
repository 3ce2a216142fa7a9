"""The app's handlers, called directly: no server, no browser."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import pytest

from resnet_demo.ui import architecture_handlers, compare_handlers, model_choice
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui.architecture_handlers import architecture_view
from resnet_demo.ui.components import SafeImage
from resnet_demo.ui.downloads import Downloads

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
    analysis, top5, status, picker, heat, caption, strip, features, raw = explain()
    assert len(top5) == 5 and all(isinstance(v, float) for v in top5.values())
    assert sum(top5.values()) <= 1.0 + 1e-6
    assert "UNTRAINED" in status and "resnet50-11ad3fa6.pth" in status
    assert "UNTRAINED" in caption
    assert isinstance(heat, PIL.Image.Image) and heat.size == (224, 224)
    assert [c for _img, c in strip][0].startswith("stem") and len(strip) == 5
    assert len(features) == 5 and features[-1][1].startswith("layer4 · 2048×7×7")
    choices = picker["choices"]
    assert choices[0] == ("Top class", h.TOP_CLASS)
    assert len(choices) == 1 + 1000  # "top class", then every class once
    assert np.load(raw).ndim == 2


def test_rerender_other_class_stage_and_full_view(offline: Path) -> None:
    analysis = explain()[0]
    second = analysis.predictions[1]
    heat, caption, strip, raw, fusion = h.rerender(analysis, "layer3", second.index, h.NO_VERSUS, "gradcam", 0.3, "full")
    assert heat.size == analysis.image.size  # mapped back onto the whole photo
    assert second.label in caption and "layer3" in caption
    assert np.load(raw).shape == (14, 14)  # layer3's map before upsampling, at 224
    heat_top, caption_top, *_ = h.rerender(analysis, "layer3", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.3, "crop")
    assert analysis.predictions[0].label in caption_top


def test_pretrained_status(fake_pretrained) -> None:
    fake_pretrained("resnet50", "imagenet-v2")
    status = model_choice.weights_status("resnet50", "imagenet-v2", None)
    assert "ImageNet V2" in status and "80.9%" in status and "UNTRAINED" not in status


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


def test_bad_choices_give_a_sentence(offline: Path) -> None:
    with pytest.raises(gr.Error, match="Upload a .pth checkpoint"):
        explain(CAT, "resnet50", model_choice.UPLOAD, None)
    with pytest.raises(gr.Error, match="Unknown model"):
        explain(CAT, "resnet18")
    with pytest.raises(gr.Error, match="Unknown stage"):
        explain(CAT, "resnet50", "imagenet-v2", None, "layer9", "gradcam", 0.5, "crop")
    analysis = explain()[0]
    with pytest.raises(gr.Error, match="Class 5000 does not exist"):
        h.rerender(analysis, "layer4", 5000, h.NO_VERSUS, "gradcam", 0.5, "crop")
    with pytest.raises(gr.Error, match="Class 5000 does not exist"):
        h.rerender(analysis, "layer4", h.TOP_CLASS, 5000, "gradcam", 0.5, "crop")
    with pytest.raises(gr.Error, match="Upload a photo first"):
        h.rerender(None, "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "crop")


def test_corrupt_checkpoint_names_the_file(offline: Path, tmp_path: Path) -> None:
    bad = _write(tmp_path / "mine.pth", b"garbage")
    with pytest.raises(gr.Error, match="mine.pth"):
        explain(CAT, "resnet50", model_choice.UPLOAD, bad)


def test_architecture_view_with_and_without_a_photo(offline: Path) -> None:
    fig, inside, feats, caption = architecture_view(None, "resnet101", "residual_ratio", "layer3.22")
    assert feats is None and "Run a photo" in caption
    assert fig.layout.height and inside.layout.height
    analysis = explain()[0]
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
    methods = [value for _label, value in h.method_picker("resnet152", "layer3")["choices"]]
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
        "cpu",
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

    from resnet_demo.errors import UserError
    from resnet_demo.ui.components import user_errors

    @user_errors
    def handler() -> None:
        raise UserError("No class matches '<img src=x onerror=alert(1)>'.")

    with pytest.raises(gr.Error) as info:
        handler()
    assert "<img" not in info.value.message and "&lt;img src=x onerror=alert(1)&gt;" in info.value.message
