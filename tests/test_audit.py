"""The audit of a whole image set: the batched maps against the single-photo engine, the command's
files, and every kind of bad input (one sentence, the output folder complete or absent)."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_demo.__main__ import main as cli
from resnet_demo.audit import audit, batch_gradcam, default_stage
from resnet_demo.core.errors import UserError
from resnet_demo.core.model import build_model
from resnet_demo.core.weights import LoadedModel, Preprocessing, WeightsSpec
from resnet_demo.data import make_sample_dataset
from resnet_demo.explain import analyze, inference_model, prepare
from resnet_demo.explain.faithfulness import faithfulness
from resnet_demo.explain.network import input_of

from .conftest import SHAPES, random_state_dict

CROP = 64


@pytest.fixture(scope="module")
def shapes_model() -> LoadedModel:
    """A random-weight ResNet-50 whose classes are the sample set's, 64 px crops."""
    model = build_model("resnet50", num_classes=len(SHAPES))
    state = random_state_dict("resnet50", seed=4)
    state["fc.weight"], state["fc.bias"] = torch.randn(len(SHAPES), 2048) * 0.05, torch.zeros(len(SHAPES))
    model.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = WeightsSpec(
        arch="resnet50",
        name="shapes.pth",
        label="generated test weights",
        categories=SHAPES,
        preprocessing=Preprocessing(resize_size=CROP * 256 // 224, crop_size=CROP),
        pretrained=True,
    )
    return LoadedModel(model.eval(), spec)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 5 images of 56 px, in class folders."""
    return make_sample_dataset(
        tmp_path_factory.mktemp("audit-shapes"), num_classes=3, images_per_class=5, image_size=56
    )


@pytest.fixture(scope="module")
def audited(shapes: Path, shapes_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit-out") / "audit"
    audit(data=shapes, model=shapes_model, out=out, batch_size=4)
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "images.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_default_stage_keeps_seven_cells_a_side() -> None:
    assert default_stage(224) == "layer4"
    assert default_stage(112) == "layer3"
    assert default_stage(64) == "layer2"
    assert default_stage(32) == "layer1"


@pytest.mark.parametrize("stage", ["layer4", "layer2"])
def test_batched_maps_equal_the_single_photo_engine(shapes: Path, shapes_model: LoadedModel, stage: str) -> None:
    files = sorted(shapes.rglob("*.jpg"))[::5][:3]
    prepared = [prepare(image=f, preprocessing=shapes_model.spec.preprocessing) for f in files]
    net = inference_model(shapes_model.model)
    got = batch_gradcam(net, input_of(net, torch.cat([p.tensor for p in prepared])), stage=stage)
    for i, p in enumerate(prepared):
        att = analyze(image=p, model=shapes_model).attribution(method="gradcam", stage=stage)
        alone = batch_gradcam(net, input_of(net, p.tensor), stage=stage)
        assert int(got.targets[i]) == int(alone.targets[0]) == att.target
        assert got.maps[i].shape == att.heatmap.shape == (CROP, CROP)
        np.testing.assert_allclose(alone.maps[0], att.heatmap, atol=1e-5)
        # A batch's convolutions sum in another order than one photo's: float32 rounding, which a map
        # whose channels nearly cancel (a peak of 0.05 before scaling) magnifies to a percent or two.
        np.testing.assert_allclose(got.maps[i], att.heatmap, atol=3e-2)
        if not att.all_zero:
            assert np.corrcoef(got.maps[i].ravel(), att.heatmap.ravel())[0, 1] > 0.999
    assert not np.allclose(got.maps[0], got.maps[1])  # the maps are the photos' own


def test_audit_files(audited: Path, shapes: Path, shapes_model: LoadedModel) -> None:
    summary = json.loads((audited / "audit.json").read_text())
    rows = _rows(audited)
    assert list(rows[0])[:6] == ["path", "label", "predicted", "confidence", "correct", "cluster"]
    assert summary["images"] == len(rows) == 15
    assert summary["stage"] == "layer2" and summary["method"] == "gradcam"
    assert [c["name"] for c in summary["classes"]] == list(SHAPES)
    maps = np.load(audited / "maps.npy")
    assert maps.shape == (15, CROP, CROP)
    members = []
    for c in summary["classes"]:
        rows_of_class = [i for i, r in enumerate(rows) if r["label"] == c["name"]]
        assert c["images"] == len(rows_of_class) == 5
        right = sum(rows[i]["correct"] == "true" for i in rows_of_class)
        assert c["accuracy"] == pytest.approx(right / 5)
        assert sum(c["confusion"].values()) == 5
        mean = np.load(audited / c["mean_map"])
        np.testing.assert_allclose(mean, maps[rows_of_class].astype(np.float32).mean(0), atol=1e-5)
        assert 1 <= len(c["clusters"]) <= 8
        for k, cl in enumerate(c["clusters"]):
            assert cl["size"] == len(cl["members"]) and set(cl["members"]) <= set(rows_of_class)
            assert all(rows[m]["cluster"] == str(k) for m in cl["members"])
            assert cl["misclassified"] == sum(rows[m]["correct"] == "false" for m in cl["members"])
            cluster_mean = np.load(audited / cl["mean_map"])
            assert cluster_mean.shape == (CROP, CROP) and cluster_mean.min() >= 0 and cluster_mean.max() <= 1
            members += cl["members"]
        assert [cl["distance"] for cl in c["clusters"]] == sorted(
            (cl["distance"] for cl in c["clusters"]), reverse=True
        )
    assert sorted(members) == list(range(15))
    # A stored map is the single-photo engine's map of that row's photo (float16 on disk).
    att = analyze(image=shapes / rows[7]["path"], model=shapes_model).attribution(method="gradcam", stage="layer2")
    np.testing.assert_allclose(maps[7].astype(np.float32), att.heatmap, atol=3e-2)
    assert rows[7]["predicted"] == att.target_label
    assert float(rows[7]["confidence"]) == pytest.approx(att.target_prob, abs=1e-3)


def test_report_opens_offline(audited: Path) -> None:
    page = (audited / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Confusion" in page and "Cluster 0" in page
    assert not [p for p in audited.parent.iterdir() if ".partial-" in p.name]


def test_command_line_zip_and_unlabelled(shapes: Path, tmp_path: Path, finetuned: Path, capsys) -> None:
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(shapes.rglob("*.jpg"))[:6]:
            zf.write(f, f"photos/{f.name}")
    out = tmp_path / "out"
    assert cli(["audit", str(archive), "--weights", str(finetuned), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = _rows(out)
    assert summary["images"] == 6 and summary["labelled"] is False and summary["accuracy"] is None
    # Relative to the zip's root; a lone folder that is not a class of the model is not a label.
    assert {r["path"] for r in rows} == {f"photos/{f.name}" for f in sorted(shapes.rglob("*.jpg"))[:6]}
    assert any("photos" in note for note in summary["notes"])
    assert all(r["label"] == "" and r["correct"] == "" and r["cluster"] == "" for r in rows)
    assert summary["stage"] == "layer1"  # the checkpoint's 32 px crop
    assert all(c["accuracy"] is None for c in summary["classes"])


def test_class_names_not_the_models(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    data = tmp_path / "pets"
    for name in ("cats", "dogs"):
        (data / name).mkdir(parents=True)
        for f in sorted(shapes.rglob("*.jpg"))[:2]:
            (data / name / f.name).write_bytes(f.read_bytes())
    result = audit(data=data, model=shapes_model, out=tmp_path / "out")
    said = [n for n in result.notes if "not among the model's classes" in n]
    assert len(said) == 1 and "cats, dogs" in said[0]
    assert result.summary["accuracy"] is None and result.summary["grouped_by"] == "prediction"


def test_one_class_unreadable_and_non_images(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    data = tmp_path / "one"
    (data / "circle").mkdir(parents=True)
    for f in sorted((shapes / "circle").glob("*.jpg"))[:3]:
        (data / "circle" / f.name).write_bytes(f.read_bytes())
    (data / "circle" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "circle" / "readme.txt").write_text("notes")
    result = audit(data=data, model=shapes_model, out=tmp_path / "out")
    s = result.summary
    assert s["images"] == 3 and s["skipped"]["unreadable"] == ["circle/broken.jpg"]
    assert s["skipped"]["not_images"] == ["circle/readme.txt"]
    assert sum("unreadable" in n for n in result.notes) == 1
    assert sum("not images" in n for n in result.notes) == 1
    assert sum("Only one class" in n for n in result.notes) == 1
    assert len(_rows(tmp_path / "out")) == 3


def _assert_refused(data: Path, model: LoadedModel, out: Path, words: str) -> None:
    with pytest.raises(UserError) as e:
        audit(data=data, model=model, out=out)
    message = str(e.value)
    assert words in message and str(out.parent) not in message and message.count(". ") == 0
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_input_one_sentence_nothing_written(shapes_model: LoadedModel, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _assert_refused(tmp_path / "empty", shapes_model, tmp_path / "o1", "holds no images")
    (tmp_path / "texts").mkdir()
    for i in range(3):
        (tmp_path / "texts" / f"{i}.txt").write_text("x")
    _assert_refused(tmp_path / "texts", shapes_model, tmp_path / "o2", "3 file(s) that are not images")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG broken")
    _assert_refused(tmp_path / "broken", shapes_model, tmp_path / "o3", "could be read")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/big.png", b"\0" * (8 * 1024**2))
    _assert_refused(bomb, shapes_model, tmp_path / "o4", "zip bomb")
    _assert_refused(tmp_path / "missing", shapes_model, tmp_path / "o5", "No folder or .zip")


def test_a_failure_midway_leaves_nothing(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    def stop(fraction: float) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        audit(data=shapes, model=shapes_model, out=out, batch_size=4, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_non_layer_method_refused(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="layer method"):
        audit(data=shapes, model=shapes_model, out=tmp_path / "out", method="occlusion")


def test_other_methods_go_through_the_engine(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    data = tmp_path / "few"
    (data / "square").mkdir(parents=True)
    for f in sorted((shapes / "square").glob("*.jpg"))[:2]:
        (data / "square" / f.name).write_bytes(f.read_bytes())
    result = audit(data=data, model=shapes_model, out=tmp_path / "out", method="eigencam", stage="layer3")
    maps = np.load(tmp_path / "out" / "maps.npy")
    first = sorted((data / "square").glob("*.jpg"))[0]
    att = analyze(image=first, model=shapes_model).attribution(method="eigencam", stage="layer3")
    np.testing.assert_allclose(maps[0].astype(np.float32), att.heatmap, atol=3e-3)
    assert result.summary["method"] == "eigencam"


def test_faithfulness_areas(shapes: Path, shapes_model: LoadedModel, tmp_path: Path) -> None:
    data = tmp_path / "few"
    data.mkdir()
    first = sorted(shapes.rglob("*.jpg"))[0]
    Image.open(first).save(data / "one.png")
    audit(data=data, model=shapes_model, out=tmp_path / "out", faithfulness=True)
    (row,) = _rows(tmp_path / "out")
    # The Explain tab's trust check on the same photo and map: the same curves (blurred baseline, 16 steps).
    analysis = analyze(image=data / "one.png", model=shapes_model)
    att = analysis.attribution(method="gradcam", stage="layer2")
    check = faithfulness(analysis, attribution=att, baseline="blur", steps=16)
    assert float(row["deletion_auc"]) == pytest.approx(check.curves.deletion_auc, abs=2e-3)
    assert float(row["insertion_auc"]) == pytest.approx(check.curves.insertion_auc, abs=2e-3)
