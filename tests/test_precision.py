"""The explanation engine's precision: how a name resolves, the bfloat16 inference copy, and the
accuracy guard (bfloat16's top-1, probabilities and every map the page shows, against float32's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm

from resnet_demo.core import precision as precision_module
from resnet_demo.core.errors import UserError
from resnet_demo.core.model import STAGES, build_model
from resnet_demo.core.precision import native_bfloat16, resolve_precision
from resnet_demo.core.weights import LoadedModel, load_model
from resnet_demo.data import eval_transform, load_image_set, open_rgb
from resnet_demo.explain import analyze
from resnet_demo.explain.network import inference_model

from .conftest import SHAPES, save_checkpoint

CPU = torch.device("cpu")
EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))


def _flags(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))


# ----------------------------------------------------------------------------- resolution


def test_named_precisions_run_as_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _flags(monkeypatch)  # even where bfloat16 is emulated: asked for, it runs
    assert resolve_precision(name="float32", device=CPU).dtype == torch.float32
    chosen = resolve_precision(name=" BFloat16 ", device=CPU)
    assert (chosen.asked, chosen.dtype, chosen.name) == ("bfloat16", torch.bfloat16, "bfloat16")
    assert "emulated" in chosen.reason


def test_unknown_precision_is_one_sentence_listing_the_choices() -> None:
    with pytest.raises(UserError) as e:
        resolve_precision(name="float16", device=CPU)
    message = str(e.value)
    assert all(choice in message for choice in ("float32", "bfloat16", "auto"))
    assert message.count(".") == 1 and message.endswith(".")


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    _flags(monkeypatch, "avx2", "avx512f", "avx512_vnni")
    assert not native_bfloat16(device=CPU)
    _flags(monkeypatch, "avx512f", "avx512_bf16")
    assert native_bfloat16(device=CPU)
    _flags(monkeypatch, "amx_tile", "amx_bf16")
    assert native_bfloat16(device=CPU)
    _flags(monkeypatch)
    assert native_bfloat16(device=torch.device("cuda"))  # every CUDA GPU this torch supports has it


def test_auto_chooses_bfloat16_only_where_native_and_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _flags(monkeypatch, "avx2")
    monkeypatch.setattr(precision_module, "AUTO_BFLOAT16", True)
    assert resolve_precision(name="auto", device=CPU).dtype == torch.float32  # emulated: slower
    _flags(monkeypatch, "avx512_bf16")
    chosen = resolve_precision(name="auto", device=CPU)
    assert (chosen.asked, chosen.name) == ("auto", "bfloat16")
    # As shipped, auto keeps float32 even where bfloat16 is native (see core/precision.py).
    monkeypatch.setattr(precision_module, "AUTO_BFLOAT16", False)
    assert resolve_precision(name="auto", device=CPU).name == "float32"


# ----------------------------------------------------------------------------- the bfloat16 copy


def test_bfloat16_copy_is_cached_beside_the_float32_one() -> None:
    model = build_model("resnet50", num_classes=10).eval()
    low, full = inference_model(model, dtype=torch.bfloat16), inference_model(model)
    assert inference_model(model, dtype=torch.bfloat16) is low and inference_model(model) is full
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(p.dtype == torch.float32 for p in full.parameters()) and next(model.parameters()).dtype == torch.float32
    assert low.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(low.fc.weight.float(), full.fc.weight, rtol=1 / 128, atol=0)  # one rounding
    with torch.no_grad():  # a model updated in place gets new copies, in both formats
        model.fc.bias.add_(1.0)
    assert inference_model(model, dtype=torch.bfloat16) is not low and inference_model(model) is not full
    with pytest.raises(ValueError):
        inference_model(model, dtype=torch.float16)


# ----------------------------------------------------------------------------- the accuracy guard


@pytest.fixture(scope="module")
def trained_like(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A ResNet-50 that answers like a fine-tuned one, built in seconds: a random torchvision
    backbone whose residual branches start small (each block's last BatchNorm scale 0.2, as in
    trained networks), BatchNorm statistics measured on the sample set at 224 px, and a
    nearest-class-mean head on its features, scaled so that the logits spread as a trained
    head's do. A plain random network is chaotic: its outputs move with any rounding, which
    says nothing about a trained one; and a random head gives near-equal probabilities."""
    torch.manual_seed(0)
    tv = tvm.resnet50(num_classes=len(SHAPES))
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the average over the calibration batch
        if isinstance(m, tvm.resnet.Bottleneck):
            m.bn3.weight.data.mul_(0.2)
    tf = eval_transform(crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    samples = load_image_set(sample_data).train
    train = _per_class(samples, 4)
    x = torch.stack([tf(open_rgb(p)) for p, _ in train])  # (12, 3, 224, 224)
    labels = torch.tensor([label for _, label in train])
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        tv.train()(x)
        feats = tv.eval()(x)  # (12, 2048)
        centre = feats.mean(0)
        means = torch.stack([feats[labels == c].mean(0) for c in range(len(SHAPES))]) - centre
        weight = means / means.norm(dim=1, keepdim=True)
        scale = 4.0 / ((feats - centre) @ weight.T).std()
    tv.fc = torch.nn.Linear(2048, len(SHAPES))
    with torch.no_grad():
        tv.fc.weight.copy_(weight * scale)
        tv.fc.bias.copy_(-(centre @ weight.T) * scale)
    model = build_model("resnet50", num_classes=len(SHAPES))
    model.load_state_dict(tv.state_dict())
    path = save_checkpoint(model, tmp_path_factory.mktemp("probe") / "shapes.pth", crop=224)
    return load_model(arch="resnet50", weights=str(path))


def _per_class(samples: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    return [s for c in range(len(SHAPES)) for s in [s for s in samples if s[1] == c][:n]]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def test_bfloat16_passes_the_accuracy_guard(trained_like: LoadedModel, sample_data: Path) -> None:
    """On the example photos and nine sample images (three per class): the same top-1, every top-k probability
    within 0.01, and every map the page shows (Grad-CAM at each stage, their fusion) r >= 0.99."""
    val = load_image_set(sample_data).val
    images = [*EXAMPLES, *(p for p, _ in _per_class(val, 3))]
    assert len(EXAMPLES) == 5 and len(images) == 14
    worst: dict[str, float] = {}
    compared = 0
    for image in images:
        exact = analyze(image=image, model=trained_like, topk=3, gradcam_stages=STAGES)
        fast = analyze(image=exact.prepared, model=trained_like, topk=3, precision="bfloat16")
        assert (exact.precision, fast.precision) == ("float32", "bfloat16")
        assert fast.predictions[0].index == exact.predictions[0].index, image
        top = [p.index for p in exact.predictions]
        np.testing.assert_allclose(fast.probabilities()[top], exact.probabilities()[top], atol=0.01, rtol=0)
        # layer4 first, as the page asks (a closed form on the rounded pass), then the stages that need a
        # gradient from the deep end, as a visitor clicking down them would: each asks a float32 rerun.
        order = STAGES[::-1]
        maps = {s: (exact.attribution(stage=s), fast.attribution(stage=s)) for s in order}
        maps["fusion"] = (exact.fusion(), fast.fusion())
        for stage, (a, b) in maps.items():
            assert a.all_zero == b.all_zero, (image, stage)  # no evidence in one is no evidence in both
            if not a.all_zero:
                worst[stage] = min(worst.get(stage, 1.0), _corr(a.heatmap, b.heatmap))
                compared += 1
    assert compared >= 0.8 * len(images) * (len(STAGES) + 1)  # blank maps would prove nothing
    assert min(worst.values()) >= 0.99, worst


def test_the_apps_precision_reaches_the_page(monkeypatch: pytest.MonkeyPatch, torch_home) -> None:
    from resnet_demo.ui import explain_handlers as h
    from resnet_demo.ui.analysis_store import stored
    from resnet_demo.ui.demo import parse_args
    from resnet_demo.ui.model_choice import SETTINGS

    assert parse_args([]).precision == "float32" and parse_args(["--precision", "bfloat16"]).precision == "bfloat16"
    photo = str(EXAMPLES[0])
    exact = h.page_after(h.explain_ui(photo, "resnet50", "random", None, "layer4", "gradcam", 0.5, "crop", None, None))
    assert "bfloat16" not in exact.caption
    monkeypatch.setitem(SETTINGS, "precision", "bfloat16")
    rounded = h.page_after(
        h.explain_ui(photo, "resnet50", "random", None, "layer4", "gradcam", 0.5, "crop", None, None)
    )
    assert "Forward in **bfloat16**: approximate" in rounded.caption
    assert stored(rounded.analysis).precision == "bfloat16" and stored(exact.analysis).precision == "float32"
