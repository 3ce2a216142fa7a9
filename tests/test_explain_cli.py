"""`python -m resnet_demo explain` and `python -m resnet_demo bench`, called in-process."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_demo.__main__ import main
from resnet_demo.explain import STAGES

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
    rc = main(["explain", str(CAT), "--weights", "random", "--method", "guided-gradcam", "--stage", "layer3",
               "--topk", "3", "--out", str(out)])
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


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_smoke(tmp_path: Path, capsys, torch_home: Path) -> None:
    md = tmp_path / "bench.md"
    rc = main(["bench", "--repeats", "1", "--warmup", "0", "--size", "64", "--json", "--markdown", str(md)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]["resnet50"]}
    assert rows["torchvision resnet50 eager forward (unit)"]["ratio"] == pytest.approx(1.0)
    for name in ("engine: plain prediction", "engine: full explain", "engine: all-stage Grad-CAM",
                 "naive: 2 forwards + captum LayerGradCam x5"):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] == report["goals"].get(name)
    assert "| engine: full explain |" in md.read_text()


def test_bench_train_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    fake = types.ModuleType("resnet_demo.bench_train")
    fake.main = lambda args: seen.update(vars(args)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "resnet_demo.bench_train", fake)
    assert main(["bench", "--train", "--repeats", "2"]) == 0
    assert seen["arch"] == ["resnet50"] and seen["batch_size"] == 8 and seen["repeats"] == 2
    assert seen["json"] is False and seen["warmup"] == 1
    assert main(["bench", "--train", "--arch", "resnet101", "--json"]) == 0
    assert seen["arch"] == ["resnet101"] and seen["repeats"] == 5 and seen["json"] is True
