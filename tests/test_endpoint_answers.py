"""Every named endpoint's answer says when the model is untrained: on the app's offline fallback (random
weights) the mark is there, on loaded weights (a generated file under torchvision's name) it is not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from resnet_demo.core.weights import ARCHES, LoadedModel
from resnet_demo.explain import analyze
from resnet_demo.ui import compare_handlers, evaluate_api
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui.model_choice import UNTRAINED_BANNER, resolve_model, untrained_name

from .conftest import EXAMPLES

CAT = str(EXAMPLES / "cat.jpg")
# The app's own default: ImageNet weights, which fall back to random ones when the file cannot be had.
WEIGHTS = "imagenet-v2"


@pytest.fixture(params=["offline", "loaded"])
def trained(request: pytest.FixtureRequest, fake_pretrained: Callable[..., Path]) -> bool:
    """False: an empty weights cache, downloads off (random weights); True: ResNet-50's file in the cache."""
    if request.param == "loaded":
        fake_pretrained("resnet50", WEIGHTS)
    return request.param == "loaded"


def _served(*, trained: bool) -> LoadedModel:
    """The model the handlers serve, checked to be the one the test means."""
    loaded = resolve_model(arch="resnet50", weights=WEIGHTS, checkpoint=None)
    assert loaded.untrained is not trained
    return loaded


def test_predict_marks_every_class_name(trained: bool) -> None:
    names = [p.label for p in analyze(image=CAT, model=_served(trained=trained)).predictions]
    top5 = h.predict(CAT, "resnet50", WEIGHTS)
    assert list(top5) == ([untrained_name(name=n) for n in names] if not trained else names)
    assert all((UNTRAINED_BANNER in name) is not trained for name in top5)


def test_predict_over_http_marks_the_label(app_url: str, tmp_path: Path) -> None:
    """What a script gets from ``/predict`` on the app's offline weights: the top label and every class say it."""
    client = Client(app_url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    out = client.predict(handle_file(CAT), "resnet50", WEIGHTS, api_name="/predict")
    assert out["label"].endswith(f"({UNTRAINED_BANNER})")
    assert out["confidences"] and all(c["label"].endswith(f"({UNTRAINED_BANNER})") for c in out["confidences"])
    assert out["label"] == out["confidences"][0]["label"]


def test_explain_marks_status_and_caption(trained: bool) -> None:
    _served(trained=trained)
    _key, top5, status, _picker, _heat, caption, *_ = h.run_explain(
        CAT, "resnet50", WEIGHTS, None, "layer4", "gradcam", 0.5, "crop"
    )
    assert (UNTRAINED_BANNER in status) is not trained and (UNTRAINED_BANNER in caption) is not trained


def test_compare_marks_each_summary(trained: bool, fake_pretrained: Callable[..., Path]) -> None:
    if trained:
        for arch in ARCHES[1:]:
            fake_pretrained(arch, WEIGHTS)
    out = compare_handlers.compare(CAT, WEIGHTS)
    summaries = [out[compare_handlers.Compared._fields.index(f"{arch}_summary")] for arch in ARCHES]
    assert len(summaries) == 3 and all((UNTRAINED_BANNER in s) is not trained for s in summaries)
    assert all(("ImageNet top-1" in s) is trained for s in summaries)  # a published accuracy only when trained


def test_evaluate_marks_the_model(trained: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    _served(trained=trained)
    monkeypatch.setattr(evaluate_api, "DEFAULT_STEPS", 2)  # the curves' length is not what is tested
    out = evaluate_api.evaluate(CAT, "resnet50", WEIGHTS, None, "layer4", "gradcam", "", "")
    assert out["model"]["untrained"] is not trained
    assert ("untrained" in json.dumps(out["model"]["weights"]).lower()) is not trained
