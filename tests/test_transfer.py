"""The transfer package: torchvision's segmentation and detection entries offline, their backbone as our
ResNet, masks, boxes, thresholds, Grad-CAM targets and bad input."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw

from resnet_demo.core.errors import UserError
from resnet_demo.core.model import STAGES, build_model
from resnet_demo.transfer import cli
from resnet_demo.transfer.backbone import backbone_stages, map_backbone_key, our_backbone
from resnet_demo.transfer.check import backbone_check
from resnet_demo.transfer.detect import detect, detector_batch, sized
from resnet_demo.transfer.explain import TransferExplanation, explain_transfer
from resnet_demo.transfer.segment import prepare_segment, segment
from resnet_demo.transfer.weights import (
    _ENTRIES,
    TransferModel,
    build_transfer,
    clear_transfer_cache,
    load_transfer,
    shared_transfer,
    transfer_spec,
)

# The entries given files here: one per family, frozen and plain BatchNorm, dilated and not.
FILED = [("segment", "deeplabv3"), ("detect", "fasterrcnn"), ("detect", "maskrcnn_v2"), ("detect", "retinanet")]
SIZE = 128  # input short side: agreement, not accuracy, is tested


def _generated(task: str, model: str, seed: int) -> dict[str, torch.Tensor]:
    """The entry's state_dict with random BatchNorm statistics, so that equal outputs mean equal wiring;
    RetinaNet's class prior is raised so that untrained weights still detect something."""
    torch.manual_seed(seed)
    sd = build_transfer(transfer_spec(task=task, model=model)).state_dict()
    g = torch.Generator().manual_seed(seed)
    for k, v in sd.items():
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
    if model == "retinanet":
        sd["head.classification_head.cls_logits.bias"].zero_()  # sigmoid(0) = 0.5 over the 0.05 cut
    return sd


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A TORCH_HOME holding generated files under torchvision's names for the FILED entries."""
    root = tmp_path_factory.mktemp("transfer_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root))
        checkpoints = root / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        for i, (task, model) in enumerate(FILED):
            torch.save(_generated(task, model, seed=i), checkpoints / transfer_spec(task=task, model=model).file_name)
        clear_transfer_cache()
        yield checkpoints
        clear_transfer_cache()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A small photo: shapes on noise, 160 x 128."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 90, 100), fill=(200, 40, 40))
    draw.rectangle((100, 30, 150, 110), fill=(30, 160, 60))
    return image


@pytest.fixture(scope="module")
def loaded(home: Path) -> dict[str, TransferModel]:
    return {model: load_transfer(task=task, model=model) for task, model in FILED}


@pytest.mark.parametrize(("task", "model"), FILED)
def test_offline_loading_matches_torchvision(
    task: str, model: str, loaded: dict[str, TransferModel], home: Path
) -> None:
    ours = loaded[model]
    builder, entry = _ENTRIES[(task, model, "resnet50")]
    reference = builder(weights=entry).eval()  # torchvision's own loader reads the same file (downloads blocked)
    assert ours.model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in ours.model.state_dict().items())
    assert ours.spec.categories == tuple(entry.meta["categories"])
    assert ours.spec.metrics == {k: float(v) for k, v in next(iter(entry.meta["_metrics"].values())).items()}


def test_missing_file_offline_is_a_clear_error(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="not in torchvision's cache.*downloads are off") as e:
        load_transfer(task="segment", model="fcn", backbone="resnet101")
    assert str(tmp_path) not in e.value.problem  # the app shows the problem; only the CLI's fix names the path
    assert e.value.cli_fix.endswith(f"{tmp_path}/hub/checkpoints/fcn_resnet101_coco-7ecb50ca.pth.")


@pytest.mark.parametrize(("task", "model"), [*FILED, ("segment", "fcn")])
def test_backbone_is_our_resnet(task: str, model: str, loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    spec = transfer_spec(task=task, model=model)
    held = loaded.get(model) or TransferModel(build_transfer(spec).eval(), spec)
    x = prepare_segment(held, photo, size=SIZE) if task == "segment" else detector_batch(held, photo, size=SIZE)
    diffs = backbone_check(held, x)
    assert set(diffs) == {"stem", "layer1", "layer2", "layer3", "layer4"}
    assert max(diffs.values()) < 1e-5
    with torch.no_grad():
        layer4 = backbone_stages(held, x)["layer4"]
    # Dilation keeps DeepLab's and FCN's layer4 at 1/8 of the input; the detectors' is 1/32.
    assert layer4.shape[-1] == (-(-x.shape[-1] // 8) if spec.dilated else -(-x.shape[-1] // 32))


def test_undilated_resnet_differs_from_deeplab(loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    held = loaded["deeplabv3"]
    plain = build_model("resnet50").eval()
    plain.load_state_dict(our_backbone(held).state_dict())  # same weights, no dilation
    x = prepare_segment(held, photo, size=SIZE)
    with torch.no_grad():
        _, ours = plain.forward_stages(x, stop="layer4")
        theirs = backbone_stages(held, x)
    assert torch.allclose(ours["layer2"], theirs["layer2"], atol=1e-4)
    assert ours["layer3"].shape != theirs["layer3"].shape


def test_key_mapping_is_one_prefix() -> None:
    assert map_backbone_key("backbone.layer3.5.conv2.weight", task="segment") == "layer3.5.conv2.weight"
    assert map_backbone_key("backbone.body.bn1.running_var", task="detect") == "bn1.running_var"
    assert map_backbone_key("backbone.fpn.inner_blocks.0.0.weight", task="detect") is None
    assert map_backbone_key("classifier.0.convs.0.0.weight", task="segment") is None


def test_segmentation_mask_is_the_photo_size(loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    result = segment(loaded=loaded["deeplabv3"], image=photo, size=SIZE)
    assert result.mask.shape == (photo.height, photo.width) and result.mask.dtype == np.uint8
    assert min(result.input_size) == SIZE
    assert abs(sum(c.share for c in result.classes) - 1.0) < 1e-6
    assert [c.share for c in result.classes] == sorted((c.share for c in result.classes), reverse=True)
    assert {c.index for c in result.classes} == set(np.unique(result.mask).tolist())


def test_a_panorama_is_capped_on_its_long_side(loaded: dict[str, TransferModel]) -> None:
    from resnet_demo.transfer.segment import MAX_LONG_SIDE

    panorama = Image.new("RGB", (4000, 100), (90, 120, 200))
    x = prepare_segment(loaded["deeplabv3"], panorama)  # 520 px short side would make it 20,800 px long
    assert x.shape[-1] == MAX_LONG_SIDE and x.shape[-2] == round(100 * MAX_LONG_SIDE / 4000)
    assert min(prepare_segment(loaded["deeplabv3"], Image.new("RGB", (700, 500))).shape[-2:]) == 520


@pytest.mark.parametrize("model", ["fasterrcnn", "maskrcnn_v2", "retinanet"])
def test_detections_and_threshold(model: str, loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    everything = detect(loaded=loaded[model], image=photo, threshold=0.0, size=SIZE)
    assert everything.items, "the generated weights should detect something"
    scores = [d.score for d in everything.items]
    assert all(0.0 <= s <= 1.0 for s in scores)
    for d in everything.items:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= photo.width and 0 <= y0 <= y1 <= photo.height
        assert (d.mask is not None) == (model == "maskrcnn_v2")
        assert d.mask is None or (d.mask.shape == (photo.height, photo.width) and d.mask.dtype == bool)
    cut = float(np.median(scores))
    kept = detect(loaded=loaded[model], image=photo, threshold=cut, size=SIZE)
    assert [d.index for d in kept.items] == [d.index for d in everything.items if d.score >= cut]
    assert len(kept.items) < len(everything.items) or min(scores) == cut


def test_nothing_detected_is_an_answer(loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    assert detect(loaded=loaded["fasterrcnn"], image=photo, threshold=1.0, size=SIZE).items == ()


def _independent_cam(held: TransferModel, x: torch.Tensor, category: int, stage: str) -> np.ndarray:
    """The same target computed with a forward hook on a model of the test's own."""
    saved: list[torch.Tensor] = []
    module = getattr(held.model.backbone, "maxpool" if stage == "stem" else stage)  # the stem ends at its pool
    handle = module.register_forward_hook(lambda m, i, o: saved.append(o))
    try:
        x = x.clone().requires_grad_()  # the weights take no gradient: let one reach the stage
        logits = held.model(x)["out"][0]  # (K, h, w)
        target = (logits[category] * (logits.argmax(0) == category)).sum()
        (grad,) = torch.autograd.grad(target, saved[0])
    finally:
        handle.remove()
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * saved[0]).sum(1))[0].detach()
    return (cam / cam.max()).numpy()


def test_segment_gradcam_equals_independent_computation(home: Path, photo: Image.Image) -> None:
    held = load_transfer(task="segment", model="deeplabv3")  # ours to hook, not the shared one
    for p in held.model.parameters():
        p.requires_grad_(False)
    found = segment(loaded=held, image=photo, size=SIZE).classes
    x = prepare_segment(held, photo, size=SIZE)
    for category in (found[0].index, found[-1].index):
        # Every stage from one forward and one backward, each equal to its own hooked computation.
        result = explain_transfer(loaded=held, image=photo, target=category, size=SIZE, features=False)
        assert list(result.cams) == list(STAGES) and result.target == category
        for stage in STAGES:
            reference = _independent_cam(held, x, category, stage)
            assert result.cams[stage].heatmap.shape == reference.shape
            assert np.abs(result.cams[stage].heatmap - reference).max() < 1e-4
        # One stage asked for alone (the leaf at layer4: no backward through the backbone) gives the same map.
        alone = explain_transfer(
            loaded=held, image=photo, target=category, stages=["layer4"], size=SIZE, features=False
        )
        assert list(alone.cams) == ["layer4"]
        assert np.abs(alone.cams["layer4"].heatmap - result.cams["layer4"].heatmap).max() < 1e-5


def test_explanation_gives_the_same_answer_as_inference(loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    seg = explain_transfer(loaded=loaded["deeplabv3"], image=photo, size=SIZE, features=False)
    assert seg.segmentation is not None
    assert np.array_equal(seg.segmentation.mask, segment(loaded=loaded["deeplabv3"], image=photo, size=SIZE).mask)
    assert seg.target == ([c for c in seg.segmentation.classes if c.index != 0] or seg.segmentation.classes)[0].index
    for model in ("fasterrcnn", "maskrcnn_v2"):
        det = explain_transfer(loaded=loaded[model], image=photo, threshold=0.0, size=SIZE, stages=["layer2"])
        plain = detect(loaded=loaded[model], image=photo, threshold=0.0, size=SIZE)
        assert det.detections is not None and [d.index for d in det.detections.items] == [d.index for d in plain.items]
        assert [d.score for d in det.detections.items] == pytest.approx([d.score for d in plain.items], abs=1e-5)
        assert det.target == plain.items[0].index  # the best detection by default
        assert set(det.features) == set(STAGES)  # the backbone's feature maps of every stage
        assert det.features["layer4"].shape[0] == 2048 and len(det.features["layer4"].channels) == 16


def test_segment_gradcam_agrees_with_pytorch_grad_cam(home: Path, photo: Image.Image) -> None:
    gradcam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    held = load_transfer(task="segment", model="deeplabv3")
    x = prepare_segment(held, photo, size=SIZE)
    with torch.no_grad():
        pred = held.model(x)["out"][0].argmax(0)  # (h, w)
    category = int(pred.flatten().mode().values)

    class Out(torch.nn.Module):  # pytorch-grad-cam wants a tensor out, not DeepLab's dict
        def __init__(self) -> None:
            super().__init__()
            self.net = held.model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)["out"]

    mask = (pred == category).float().numpy()
    with gradcam.GradCAM(model=Out(), target_layers=[held.model.backbone.layer4]) as cam:
        theirs = cam(input_tensor=x, targets=[SemanticSegmentationTarget(category, mask)])[0]  # (h, w) at input size
    ours = explain_transfer(loaded=held, image=photo, target=category, size=SIZE, features=False).cams["layer4"].heatmap
    up = F.interpolate(torch.from_numpy(ours)[None, None], size=theirs.shape, mode="bilinear")[0, 0].numpy()
    assert np.corrcoef(up.ravel(), theirs.ravel())[0, 1] >= 0.99


def _independent_detection_cam(held: TransferModel, photo: Image.Image, index: int, stage: str) -> np.ndarray:
    """Grad-CAM of detection ``index``'s score at ``stage``, with a forward hook on a shell of the detector
    of the test's own (sized as the test's inputs), unscaled."""
    model = sized(held.model, SIZE)  # a shell: its modules are its own, so the hook never reaches ``held``
    saved: list[torch.Tensor] = []
    handle = getattr(model.backbone.body, stage).register_forward_hook(lambda m, i, o: saved.append(o))
    try:
        with torch.enable_grad():
            image = TF.to_tensor(photo).requires_grad_()  # the weights take no gradient: let one reach the stage
            score = model([image])[0]["scores"][index]
            (grad,) = torch.autograd.grad(score, saved[0])
    finally:
        handle.remove()
    return torch.relu((grad.mean((2, 3), keepdim=True) * saved[0]).sum(1))[0].detach().numpy()


def test_detection_gradcam(loaded: dict[str, TransferModel], photo: Image.Image) -> None:
    held = loaded["fasterrcnn"]
    found = detect(loaded=held, image=photo, threshold=0.0, size=SIZE).items
    chosen = found[-1]  # not the default: the user's pick
    result = explain_transfer(loaded=held, image=photo, target=chosen.index, threshold=0.0, size=SIZE, features=False)
    cam = result.cams["layer3"]
    assert cam.heatmap.shape == (SIZE // 16, -(-photo.width * SIZE // photo.height // 16))
    # The setup has evidence: the detection's score, differentiated independently, weighs layer3's
    # activations positively somewhere. The map must then be that evidence, not zeros, peaking where it does.
    reference = _independent_detection_cam(held, photo, chosen.index, "layer3")
    assert reference.max() > 0
    assert not cam.all_zero and cam.heatmap.min() >= 0.0 and cam.heatmap.max() == pytest.approx(1.0)
    assert np.abs(cam.heatmap - reference / reference.max()).max() < 1e-4
    assert np.unravel_index(cam.heatmap.argmax(), cam.heatmap.shape) == np.unravel_index(
        reference.argmax(), reference.shape
    )
    assert chosen.label in cam.target and f"detection {chosen.index}" in cam.target
    with pytest.raises(UserError, match="There is no detection 999 over the threshold"):
        explain_transfer(loaded=loaded["fasterrcnn"], image=photo, target=999, size=SIZE)
    nothing = explain_transfer(loaded=loaded["fasterrcnn"], image=photo, threshold=1.0, size=SIZE, features=False)
    assert nothing.cams == {} and nothing.target is None  # nothing detected: an answer, nothing to explain


def test_shared_models_are_frozen_and_bounded(home: Path) -> None:
    a = shared_transfer(task="segment", model="deeplabv3")
    assert shared_transfer(task="segment") is a
    assert not any(p.requires_grad for p in a.model.parameters())
    for _, model in FILED[1:]:
        shared_transfer(task="detect", model=model)
    assert shared_transfer(task="segment", model="deeplabv3") is not a  # pushed out: at most KEEP_MODELS stay


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"task": "classify"}, "Unknown task 'classify'; choose one of segment, detect."),
        ({"model": "yolo"}, "Unknown detect model 'yolo'; choose one of"),
        ({"backbone": "resnet101"}, "fasterrcnn is published on resnet50 only"),
        ({"stage": "layer9"}, "Unknown stage 'layer9'"),
        ({"image": "no-such-photo.jpg"}, "no-such-photo.jpg"),
        ({"threshold": 1.5}, "The score threshold must be between 0 and 1"),
        ({"target": "zebra"}, "The target of a detection is its number as listed"),
        ({"target": "999"}, "There is no detection 999 over the threshold"),
        ({"task": "segment", "model": "fcn", "target": "unicorn"}, "Unknown class 'unicorn'; the classes are"),
    ],
)
def test_bad_input_is_one_sentence(change: dict, sentence: str, home: Path, photo: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    photo.save(path)
    args = _args(path, tmp_path, **change)
    with pytest.raises(UserError) as e:
        cli.main(args)
    assert sentence in str(e.value) and "\n" not in str(e.value)


def _args(photo_path: Path, out: Path, **change: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    args = parser.parse_args([str(photo_path), "--task", "detect", "--out", str(out / "out"), "--size", str(SIZE)])
    for key, value in change.items():
        setattr(args, key, value if key != "image" else str(out / str(value)))
    return args


@pytest.mark.parametrize(("task", "threshold"), [("segment", 0.5), ("detect", 1.0), ("detect", 0.0)])
def test_cli_writes_json_png_and_npy(
    task: str, threshold: float, home: Path, photo: Image.Image, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "photo.png"
    photo.save(path)
    assert cli.main(_args(path, tmp_path, task=task, threshold=threshold, json=True)) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert max(summary["backbone_relative_diff"].values()) < 1e-5
    if task == "segment":
        assert Image.open(out / "mask.png").size == photo.size and summary["classes"]
    elif threshold == 1.0:
        assert summary["detections"] == [] and summary["gradcam"] is None  # nothing detected: an answer
    else:
        assert summary["detections"] and (out / "detections.png").exists()
    # Something to explain exactly when something was found: the map checks below are never skipped silently.
    assert (summary["gradcam"] is None) == (threshold == 1.0)
    if summary["gradcam"] is not None:
        assert list(summary["gradcam"]["maps"]) == list(STAGES)
        for stage in STAGES:
            assert np.load(out / f"gradcam_{stage}.npy").shape == tuple(summary["gradcam"]["maps"][stage]["shape"])
            assert (out / f"gradcam_{stage}.png").exists()
    assert all((out / f"features_{stage}.png").exists() for stage in STAGES)


def test_app_handler_segments_and_explains(home: Path, photo: Image.Image, tmp_path: Path) -> None:
    from resnet_demo.ui.transfer_handlers import OWN_SIZE, pick_stage, transfer

    path = tmp_path / "photo.png"
    photo.save(path)
    picture, legend, heat, strip, features, summary, menu = transfer(
        str(path), "segment", "deeplabv3", "resnet50", 0.5, SIZE, None, "layer3"
    )
    assert picture.size == photo.size and heat.size == photo.size
    assert legend.startswith("Classes found:") and "%" in legend
    assert "dilated" in summary and "layer3, layer4" in summary and "Grad-CAM of class" in summary
    assert [caption.split(" ")[0] for _, caption in strip] == list(STAGES)
    assert heat is strip[STAGES.index("layer3")][0]  # the large map is the strip's tile for the chosen stage
    assert [caption.split(" ")[0] for _, caption in features] == list(STAGES) and "2048×" in features[-1][1]
    choices = [value for _, value in menu["choices"]]
    found = segment(loaded=shared_transfer(task="segment"), image=photo, size=SIZE).classes
    assert choices == [c.index for c in found] and menu["value"] in choices
    # The user picks another class: the maps are that class's.
    other = choices[-1]
    *_, summary2, menu2 = transfer(str(path), "segment", "deeplabv3", "resnet50", 0.5, SIZE, other, "layer4")
    assert menu2["value"] == other and repr(found[-1].name).replace("'", "") in summary2.replace("'", "")
    # Picking a stage shows that tile of the strip, without a rerun (the gallery hands back file paths).
    tiles = [(f"/tmp/{caption.split(' ')[0]}.jpg", caption) for _, caption in strip]
    assert pick_stage(tiles, "layer1") == "/tmp/layer1.jpg"
    assert OWN_SIZE == 0 and transfer.__name__ == "transfer"


def test_target_by_name_number_or_menu_value() -> None:
    from resnet_demo.transfer.explain import target_index

    seg, det = transfer_spec(task="segment"), transfer_spec(task="detect")
    assert target_index(seg, "cat") == seg.categories.index("cat") and target_index(seg, " 12 ") == 12
    assert target_index(det, 3) == 3 and target_index(det, 3.0) == 3 and target_index(det, "") is None
    assert target_index(det, None) is None
    for spec, bad, sentence in (
        (seg, "unicorn", "Unknown class 'unicorn'"),
        (det, "dog", "is its number as listed"),
        (det, 2.5, "is its number as listed"),
        (seg, "²", "Unknown class '²'"),
    ):
        with pytest.raises(UserError, match=sentence):
            target_index(spec, bad)


def test_app_handler_nothing_detected_and_bad_input(home: Path, photo: Image.Image, tmp_path: Path) -> None:
    import gradio as gr

    from resnet_demo.ui.transfer_handlers import legend_markdown, model_choices, summary_markdown, transfer

    path = tmp_path / "photo.png"
    photo.save(path)
    picture, legend, heat, strip, features, summary, menu = transfer(
        str(path), "detect", "fasterrcnn", "resnet50", 1.0, SIZE, None, "layer4"
    )
    assert legend == "Nothing detected with a score of at least 1.00: lower the threshold."
    assert heat is None and strip == [] and menu["choices"] == [] and len(features) == len(STAGES)
    assert "frozen" in summary and "Nothing to explain." in summary
    empty = explain_transfer(
        loaded=shared_transfer(task="detect", model="retinanet"),
        image=photo,
        threshold=1.0,
        size=SIZE,
        features=False,
        check=True,
    )
    assert legend_markdown(empty).startswith("Nothing detected") and "Grad-CAM" not in summary_markdown(
        empty_spec := transfer_spec(task="detect", model="retinanet"), empty
    )
    assert "frozen" in summary_markdown(empty_spec, empty)
    with pytest.raises(gr.Error, match="Upload a photo first"):
        transfer(None, "detect", "fasterrcnn", "resnet50", 0.5, SIZE, None, "layer4")
    with pytest.raises(gr.Error, match="Unknown segment model 'retinanet'"):
        transfer(str(path), "segment", "retinanet", "resnet50", 0.5, SIZE, None, "layer4")
    with pytest.raises(gr.Error, match="The input size must be between"):
        transfer(str(path), "segment", "deeplabv3", "resnet50", 0.5, 5000, None, "layer4")
    model, backbone = model_choices("detect", "resnet101")  # detection is published on ResNet-50 only
    assert model["value"] == "fasterrcnn" and backbone["choices"] == ["resnet50"] and backbone["value"] == "resnet50"


def test_tab_wires_the_transfer_endpoint() -> None:
    import gradio as gr

    from resnet_demo.ui.transfer_tab import build_transfer_tab

    with gr.Blocks() as demo:
        build_transfer_tab()
    assert "/transfer" in {f"/{d.api_name}" for d in demo.fns.values() if d.api_name}


def test_app_handler_runs_offline_on_random_weights(
    photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like every tab: no published file and downloads off -> random weights, labelled, with the reason."""
    from resnet_demo.transfer.weights import clear_transfer_cache
    from resnet_demo.ui.transfer_handlers import transfer

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    clear_transfer_cache()
    try:
        path = tmp_path / "photo.png"
        photo.save(path)
        picture, legend, heat, *_, summary, _ = transfer(
            str(path), "segment", "fcn", "resnet50", 0.5, SIZE, None, "layer4"
        )
        assert picture.size == photo.size and legend.startswith("Classes found:")
        assert "UNTRAINED" in summary and "not in torchvision's cache" in summary
        assert str(tmp_path) not in summary  # the reason, never the server's path
        with pytest.raises(UserError, match="not in torchvision's cache"):
            load_transfer(task="segment", model="fcn", backbone="resnet50")  # the core still refuses by default
    finally:
        clear_transfer_cache()


def test_app_pictures_are_display_copies_and_the_cli_keeps_full_size(
    home: Path, photo: Image.Image, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A large photo: the model sees all of it, /transfer sends display copies, the command line full size."""
    from resnet_demo.ui.analysis_store import DISPLAY_MAX
    from resnet_demo.ui.transfer_handlers import transfer

    big = photo.resize((3000, 2000), Image.Resampling.BILINEAR)  # longer than DISPLAY_MAX, 3:2 as a camera's
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    shown = (DISPLAY_MAX, round(DISPLAY_MAX * big.height / big.width))
    for task, model, threshold in (("segment", "deeplabv3", 0.5), ("detect", "fasterrcnn", 0.0)):
        picture, _legend, heat, strip, *_ = transfer(str(path), task, model, "resnet50", threshold, 320, None, "layer4")
        assert strip, f"{task}: nothing explained, so no map was checked"
        assert [p.size for p in (picture, heat, *(tile for tile, _ in strip))] == [shown] * (2 + len(strip)), task
    assert cli.main(_args(path, tmp_path, task="segment", size=320, stage="layer4", json=True)) == 0
    capsys.readouterr()
    for name in ("segmentation.png", "mask.png", "gradcam_layer4.png"):
        with Image.open(tmp_path / "out" / name) as written:
            assert written.size == big.size, name


def test_drawing_on_a_display_copy_scales_boxes_masks_and_classes() -> None:
    """The boxes, masks and classes are in the photo's pixels; drawn on a smaller copy, they land where they were."""
    from resnet_demo.core.images import display_copy
    from resnet_demo.transfer.detect import Detection, Detections
    from resnet_demo.transfer.drawing import draw_detections, draw_segmentation, palette
    from resnet_demo.transfer.segment import Segmentation, SegmentClass

    black = Image.new("RGB", (3000, 2000))
    small = display_copy(black, max_side=600)
    scale = small.width / black.width
    mask = np.zeros((2000, 3000), dtype=bool)
    mask[1000:1800, 1500:2400] = True  # the box's inside
    dog = Detection(index=0, label="dog", label_index=18, score=0.9, box=(1500.0, 1000.0, 2400.0, 1800.0), mask=mask)
    found = Detections(items=(dog,), threshold=0.5, photo_size=black.size)
    drawn = np.asarray(draw_detections(small, found)).astype(int)
    colour = np.array(palette(18 % 255 + 1))
    x0, y0, x1, y1 = (round(v * scale) for v in (1500, 1000, 2400, 1800))
    assert (drawn[(y0 + y1) // 2, x0] == colour).all()  # the box's left edge, moved with the photo
    assert drawn[(y0 + y1) // 2, (x0 + x1) // 2].sum() > 0  # the mask tints the inside
    assert drawn[y1 + 5, x1 + 5].sum() == 0 and drawn[y0 - 5, x0 - 5].sum() == 0  # and nothing outside
    classes = np.zeros((2000, 3000), dtype=np.uint8)
    classes[:, 1500:] = 15
    halves = (SegmentClass(0, "background", 0.5), SegmentClass(15, "person", 0.5))
    segmentation = Segmentation(mask=classes, classes=halves, input_size=(200, 300))
    tinted = np.asarray(draw_segmentation(small, segmentation)).astype(int)
    assert tinted.shape[:2] == (small.height, small.width)
    assert np.abs(tinted[:, small.width // 2 + 2 :] - np.array(palette(15)) // 2).max() <= 1
    assert tinted[:, : small.width // 2 - 2].max() == 0


def test_nothing_detected_at_threshold_zero_gives_no_impossible_advice(photo: Image.Image) -> None:
    from resnet_demo.transfer.detect import Detections
    from resnet_demo.ui.transfer_handlers import legend_markdown

    def legend(threshold: float) -> str:
        empty = Detections(items=(), threshold=threshold, photo_size=photo.size)
        nothing = TransferExplanation(None, empty, None, None, cams={}, features={}, backbone_diff={})
        return legend_markdown(nothing)

    assert "lower the threshold" in legend(0.3) and "0.30" in legend(0.3)
    assert legend(0.0).startswith("Nothing detected") and "lower" not in legend(0.0) and "threshold 0" in legend(0.0)


def test_segment_target_counts_the_photos_pixels(home: Path, photo: Image.Image) -> None:
    """At an input size other than the photo's, the explained class is counted in the photo's own pixels."""
    result = explain_transfer(loaded=shared_transfer(task="segment"), image=photo, size=2 * SIZE, features=False)
    assert result.segmentation is not None and result.segmentation.input_size != photo.size[::-1]
    count = int(np.count_nonzero(result.segmentation.mask == result.target))
    assert f" {count:,} of the photo's {photo.width * photo.height:,} pixels" in str(result.target_text)


def test_app_summary_marks_untrained_weights_only(
    home: Path, photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/transfer's summary says UNTRAINED on random weights (no file, downloads off), and not on loaded ones."""
    from resnet_demo.transfer.weights import clear_transfer_cache
    from resnet_demo.ui.model_choice import UNTRAINED_BANNER
    from resnet_demo.ui.transfer_handlers import transfer

    path = tmp_path / "photo.png"
    photo.save(path)

    def summary() -> str:
        return transfer(str(path), "segment", "deeplabv3", "resnet50", 0.5, SIZE, None, "layer4").summary

    assert not shared_transfer(task="segment").untrained and UNTRAINED_BANNER not in summary()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    clear_transfer_cache()
    try:
        assert shared_transfer(task="segment", fallback_to_random=True).untrained and UNTRAINED_BANNER in summary()
    finally:
        clear_transfer_cache()
