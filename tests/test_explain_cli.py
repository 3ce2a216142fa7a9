"""`python -m resnet_demo explain`, called in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_demo.__main__ import main
from resnet_demo.core.model import STAGES

from .conftest import EXAMPLES

CAT = EXAMPLES / "cat.jpg"


def test_explain_all_stages_writes_files_and_json(fake_pretrained, tmp_path: Path, capsys) -> None:
    fake_pretrained("resnet50", "imagenet-v2")
    out = tmp_path / "out"
    rc = main(["explain", str(CAT), "--out", str(out), "--stage", "all", "--target", "tabby", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["target"]["index"] == 281 and summary["target"]["label"] == "tabby"
    assert summary["untrained"] is False and summary["stages"] == list(STAGES)
    assert len(summary["predictions"]) == 5 and len(summary["blocks"]) == 16
    assert {"forward", "total"} <= set(summary["timings"])
    raw_shapes = {"stem": [56, 56], "layer1": [56, 56], "layer2": [28, 28], "layer3": [14, 14], "layer4": [7, 7]}
    for stage in STAGES:
        info = summary["maps"][stage]
        assert info["raw_shape"] == raw_shapes[stage]
        assert np.load(out / info["files"]["raw"]).shape == tuple(raw_shapes[stage])
        assert Image.open(out / info["files"]["overlay"]).size == (224, 224)
        assert Image.open(out / info["files"]["overlay_full"]).size == Image.open(CAT).size
        assert (out / summary["features"][stage]["file"]).exists()
    assert Image.open(out / "crop.png").size == (224, 224)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_explain_text_output_for_guided_gradcam(tmp_path: Path, capsys, torch_home: Path) -> None:
    out = tmp_path / "g"
    rc = main(
        [
            "explain",
            str(CAT),
            "--weights",
            "random",
            "--method",
            "guided-gradcam",
            "--stage",
            "layer3",
            "--topk",
            "3",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "UNTRAINED" in text and "Guided Grad-CAM" in text and "layer3" in text
    assert np.load(out / "map_guided-gradcam_layer3.npy").shape == (3, 224, 224)


def test_explain_bad_input_is_one_line(tmp_path: Path, capsys, torch_home: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    assert main(["explain", str(notes), "--weights", "random", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an image" in err and err.count("\n") == 1
    assert main(["explain", str(CAT), "--weights", "random", "--target", "zzzz", "--out", str(tmp_path / "y")]) == 2
    assert "No class matches" in capsys.readouterr().err


def test_explain_contrastive_map_and_fusion(tmp_path: Path, capsys, torch_home: Path) -> None:
    out = tmp_path / "c"
    rc = main(
        [
            "explain",
            str(CAT),
            "--weights",
            "random",
            "--method",
            "layercam",
            "--stage",
            "layer3",
            "--target",
            "1",
            "--versus",
            "tabby",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["target"]["index"] == 1 and summary["versus"] == {"index": 281, "label": "tabby"}
    assert summary["method"] == "layercam" and summary["stages"] == ["layer3"] and summary["skipped_stages"] == []
    assert np.load(out / "map_layercam_layer3.npy").shape == (14, 14)
    rc = main(
        ["explain", str(CAT), "--weights", "random", "--method", "gradcam++", "--stage", "fusion", "--out", str(out)]
    )
    assert rc == 0 and "fusion" in capsys.readouterr().out
    fused = np.load(out / "map_gradcam++_fusion.npy")
    assert fused.shape == (224, 224) and fused.max() == 1.0 and fused.min() >= 0.0


def test_explain_all_stages_skips_those_a_method_lacks(tmp_path: Path, capsys, torch_home: Path) -> None:
    out = tmp_path / "cam"
    assert (
        main(["explain", str(CAT), "--weights", "random", "--method", "cam", "--stage", "all", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "skipped stem, layer1, layer2, layer3" in text and "layer4 only" in text
    assert sorted(p.name for p in out.glob("map_*.npy")) == ["map_cam_layer4.npy"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "lime"], "Unknown method 'lime'"),
        (["--method", "cam", "--stage", "layer3"], "CAM works at layer4 only"),
        (["--target", "5", "--versus", "5"], "against itself"),
        (["--method", "eigencam", "--versus", "3"], "ignores the class"),
        (["--versus", "zzzz"], "No class matches"),
        (["--method", "scorecam", "--channels", "-1"], "--channels"),
    ],
)
def test_explain_bad_method_stage_or_contrast_is_one_line(extra, message, tmp_path: Path, capsys, torch_home) -> None:
    assert main(["explain", str(CAT), "--weights", "random", "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_explain_passes_the_newer_methods_options(tmp_path: Path, capsys, torch_home: Path) -> None:
    from resnet_demo.core.weights import shared_model
    from resnet_demo.explain import analyze

    out = tmp_path / "s"
    argv = ["explain", str(CAT), "--weights", "random", "--method", "smoothgrad", "--samples", "2", "--seed", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    analysis = analyze(image=CAT, model=shared_model(arch="resnet50", weights="random"))
    expected = analysis.attribution(method="smoothgrad", smoothgrad_samples=2, seed=3).raw
    assert np.allclose(np.load(out / "map_smoothgrad_input.npy"), expected, atol=1e-6)
    other = analysis.attribution(method="smoothgrad", smoothgrad_samples=2, seed=4).raw
    assert not np.allclose(other, expected, atol=1e-6)  # the seed reached the method
    capsys.readouterr()
    assert main(["explain", str(CAT), "--weights", "random", "--method", "rise", "--masks", "10"]) == 2
    assert capsys.readouterr().err.strip() == "error: RISE takes 50 to 4000 masks, not 10."


def test_explain_lrp_reports_where_the_relevance_went(fake_pretrained, tmp_path: Path, capsys) -> None:
    fake_pretrained("resnet50", "imagenet-v2")  # biases after folding: some relevance is absorbed
    assert main(["explain", str(CAT), "--method", "lrp", "--out", str(tmp_path / "l"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    points = summary["conservation"]["points"]
    assert list(points) == ["fc", "layer4", "layer3", "layer2", "layer1", "input"]
    for share in points.values():  # what arrived plus what biases and stabilisers took: all of the score
        assert share["relevance"] + share["biases"] + share["stabilisers"] == pytest.approx(1.0, abs=1e-3)
    assert points["fc"]["relevance"] == pytest.approx(1.0 - points["fc"]["biases"], abs=1e-3)
    assert any(abs(p["biases"]) > 1e-3 for p in points.values())
