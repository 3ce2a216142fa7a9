"""`python -m resnet_demo evaluate`, called in-process: its report and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from PIL import Image

from resnet_demo.__main__ import main
from resnet_demo.core.weights import CHECKPOINT_FORMAT, LoadedModel, Preprocessing
from resnet_demo.explain import evaluate_cli
from resnet_demo.explain.sanity import SANITY_STEPS

from .conftest import EXAMPLES, random_state_dict
from .test_explain import small  # noqa: F401  (the fixture)

CAT = EXAMPLES / "cat.jpg"
CLASSES = ("tabby", "tiger cat", "goldfish", "shark", "hen", "ostrich")


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-50 checkpoint with 6 classes that crops to 64 px: the whole command in seconds."""
    path = tmp_path_factory.mktemp("ckpt") / "six.pth"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": "resnet50",
            "model": random_state_dict("resnet50", num_classes=len(CLASSES)),
            "class_names": list(CLASSES),
            "preprocessing": Preprocessing(resize_size=66, crop_size=64).to_dict(),
        },
        path,
    )
    return path


def test_evaluate_json_has_curves_and_sanity(
    small: LoadedModel,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    # The one-block-per-stage model: the sanity check refolds the model at each of its 5 steps.
    monkeypatch.setattr(evaluate_cli, "shared_model", lambda **kwargs: small)
    rc = main(["evaluate", str(CAT), "--target", "3", "--steps", "4", "--no-rank", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"]["index"] == 3 and report["versus"] is None and report["ranking"] is None
    assert report["baseline"] == "blur"  # the default
    assert [f["method"] for f in report["faithfulness"]] == ["gradcam"]
    for f in report["faithfulness"]:
        for curves in (f["map"], f["random_map"]):
            assert len(curves["deletion"]) == 5 and curves["fractions"][0] == 0 and curves["fractions"][-1] == 1
            assert 0 <= curves["deletion_auc"] <= 1 and 0 <= curves["insertion_auc"] <= 1
    sanity = report["sanity"]["gradcam"]
    assert [s["randomized"][-1] for s in sanity["steps"]] == list(SANITY_STEPS)
    assert all(-1 <= s["correlation"] <= 1 for s in sanity["steps"])
    assert sanity["passed"] == (sanity["steps"][1]["correlation"] < sanity["threshold"])
    assert {"analyze", "maps", "faithfulness", "sanity"} == set(report["timings"])


def test_evaluate_with_the_mean_baseline(
    small: LoadedModel,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    monkeypatch.setattr(evaluate_cli, "shared_model", lambda **kwargs: small)
    common = ["evaluate", str(CAT), "--target", "3", "--steps", "4", "--no-sanity", "--no-rank"]
    assert main([*common, "--json"]) == 0
    blur = json.loads(capsys.readouterr().out)
    assert main([*common, "--json", "--baseline", "mean"]) == 0
    mean = json.loads(capsys.readouterr().out)
    assert mean["baseline"] == "mean"
    # Same photo and map, another baseline: the curves start alike and end apart.
    b, m = blur["faithfulness"][0]["map"], mean["faithfulness"][0]["map"]
    assert b["deletion"][0] == pytest.approx(m["deletion"][0]) and b["deletion"][-1] != pytest.approx(m["deletion"][-1])
    assert main([*common, "--baseline", "mean"]) == 0
    assert "removed pixels show the crop's mean colour" in capsys.readouterr().out


def test_evaluate_loads_the_named_weights_from_the_cache(fake_pretrained, capsys) -> None:
    # No stand-in for the loader: ImageNet V2's file name in a temporary TORCH_HOME, generated weights in it,
    # the head scaled down so that the softmax is not saturated (every probability then tells models apart).
    state = random_state_dict("resnet50", seed=5)
    state["fc.weight"] = state["fc.weight"] * 0.02
    fake_pretrained("resnet50", "imagenet-v2", state_dict=state)
    rc = main(["evaluate", str(CAT), "--target", "tabby", "--steps", "2", "--no-rank", "--no-sanity", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "imagenet-v2" and report["untrained"] is False
    assert report["target"]["index"] == 281 and report["target"]["label"] == "tabby"  # torchvision's categories
    # The probability is the cached file's: torchvision's own ResNet-50 reads the same file and crop.
    entry = tvm.ResNet50_Weights.IMAGENET1K_V2
    x = entry.transforms()(Image.open(CAT).convert("RGB"))[None]
    with torch.no_grad():
        prob = torch.softmax(tvm.resnet50(weights=entry).eval()(x), dim=1)[0, 281].item()
    assert 1e-6 < prob < 0.5 and report["target"]["prob"] == pytest.approx(prob, rel=1e-3)


def test_evaluate_text_ranks_the_cheap_methods(small_checkpoint: Path, capsys) -> None:
    rc = main(
        [
            "evaluate",
            str(CAT),
            "--weights",
            str(small_checkpoint),
            "--target",
            "1",
            "--versus",
            "goldfish",
            "--methods",
            "gradcam",
            "layercam",
            "--steps",
            "4",
            "--no-sanity",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "class 1 (tiger cat" in out and "and not 2 (goldfish)" in out and "Faithfulness at layer4, 4 steps" in out
    evaluated = [m.group(1) for m in re.finditer(r"^  (\S+) +[\d.]+ +[\d.]+ +-?[\d.]+ ", out, flags=re.M)]
    assert evaluated == ["gradcam", "layercam"]
    ranked = [m.group(1) for m in re.finditer(r"^ +\d+\. (\S+) ", out, flags=re.M)]
    # Every cheap method with a contrastive version: Eigen-CAM ignores the class, so it is left out.
    assert "gradcam" in ranked and "cam" in ranked and "eigencam" not in ranked
    assert "Sanity" not in out and out.rstrip().splitlines()[-1].startswith("Timings: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "nosuch"], "Unknown method 'nosuch'"),
        (["--stage", "layer9"], "Unknown stage 'layer9'"),
        (["--steps", "0"], "--steps must be between"),
        (["--baseline", "grey"], "Unknown baseline 'grey'; choose one of blur, mean."),
        (["--target", "zzzz"], "No class matches"),
        (["--target", "3", "--versus", "3"], "against itself"),
        (["--methods", "eigencam", "--versus", "3"], "no contrastive map"),
    ],
)
def test_evaluate_bad_input_is_one_line(args: list[str], message: str, capsys, small_checkpoint: Path) -> None:
    rc = main(
        ["evaluate", str(CAT), "--weights", str(small_checkpoint), "--no-sanity", "--no-rank", "--steps", "1", *args]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert str(small_checkpoint.parent) not in err and str(Path.home()) not in err


def test_evaluate_not_an_image(tmp_path: Path, capsys, torch_home: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    assert main(["evaluate", str(notes), "--weights", "random"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an image" in err and err.count("\n") == 1
