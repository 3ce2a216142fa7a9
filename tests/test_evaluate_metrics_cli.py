"""`evaluate --metrics`, `--box`, `--object` and `--reliability`, called in-process; and the object's
mask from the segmentation model (random DeepLabV3 weights, no file)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_demo.__main__ import main
from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze, evaluate_cli
from resnet_demo.explain.metric_cards import metric_cards
from resnet_demo.explain.pointing import box_mask
from resnet_demo.explain.sanity import spearman
from resnet_demo.transfer import object_mask as object_mask_module
from resnet_demo.transfer.object_mask import object_classes, object_mask
from resnet_demo.transfer.segment import segment
from resnet_demo.transfer.weights import TransferModel, build_transfer, transfer_spec

from .conftest import EXAMPLES
from .test_explain import small  # noqa: F401  (the fixture)

CAT = EXAMPLES / "cat.jpg"  # 451 x 300
FAST = ["--no-rank", "--no-sanity", "--steps", "4", "--n", "3"]


@pytest.fixture
def use_small(small: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> LoadedModel:  # noqa: F811
    monkeypatch.setattr(evaluate_cli, "shared_model", lambda **kwargs: small)
    return small


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["evaluate", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_metrics_json_are_the_engines_records(use_small: LoadedModel, capsys) -> None:
    names = ["sparseness", "complexity", "pointing", "energy-pointing"]  # every key of "all": tests/test_metrics.py
    rc, out, _ = _run(capsys, str(CAT), "--metrics", ",".join(names), "--box", "100,50,300,250", "--json", *FAST)
    assert rc == 0
    (entry,) = json.loads(out)["metrics"]
    assert entry["method"] == "gradcam" and entry["skipped"] == {} and list(entry["cards"]) == names
    # The same records as the engine's on a fresh analysis of the same photo.
    analysis = analyze(image=CAT, model=use_small)
    att = analysis.attribution(stage="layer4", method="gradcam")
    mask = box_mask(analysis.prepared, (100, 50, 300, 250))
    expected = metric_cards(analysis, attribution=att, metrics=names, object_mask=mask).to_json()
    for name, record in entry["cards"].items():
        assert set(record) == set(expected[name])
        for field in ("description", "range", "better", "reference", "cost_forwards", "better_than_random"):
            assert record[field] == expected[name][field], (name, field)
        for field in ("value", "random_value"):
            assert record[field] == pytest.approx(expected[name][field], rel=1e-5, abs=1e-7), (name, field)


def test_all_without_an_object_skips_the_pointing_games(use_small: LoadedModel, capsys) -> None:
    rc, out, _ = _run(capsys, str(CAT), "--metrics", "sparseness,pointing", *FAST)
    assert rc == 2  # named without an object: an error
    rc, out, _ = _run(capsys, str(CAT), "--metrics", "all", *FAST)
    assert rc == 0
    assert "Metric cards of gradcam at layer4" in out
    assert "pointing: skipped: needs the object" in out and "energy-pointing: skipped" in out
    table = out.split("Metric cards", 1)[1]
    for name in ("road", "confidence", "sparseness", "complexity", "max-sensitivity", "random-logit", "deletion"):
        assert f"\n  {name} " in table


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--metrics", "all", "--box", "300,50,100,250"], "inverted"),
        (["--metrics", "all", "--box", "100,50,100,250"], "no area"),
        (["--metrics", "all", "--box", "100,50,500,250"], "outside the photo"),
        (["--metrics", "all", "--box", "1,2,3"], "four numbers"),
        (["--metrics", "pointing", "--object", "unicorn"], "does not know 'unicorn'; it knows aeroplane"),
        (["--metrics", "all", "--n", "0"], "from 1 to 64"),
        (["--metrics", "all", "--n", "1000"], "from 1 to 64"),
        (["--metrics", "road,bogus"], "Unknown metric 'bogus'"),
        (["--metrics", "all", "--similarity", "cosine"], "Unknown similarity"),
        (["--metrics", "all", "--box", "1,1,9,9", "--object", "cat"], "not both"),
    ],
)
def test_bad_input_is_one_line(use_small: LoadedModel, capsys, argv: list[str], words: str) -> None:
    rc, out, err = _run(capsys, str(CAT), *FAST, *argv)
    assert rc == 2 and out == ""
    assert words in err and err.count("\n") == 1 and "/work" not in err


def test_reliability_across_photos(use_small: LoadedModel, tmp_path: Path, capsys) -> None:
    for name in ("cat.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo")
    metrics = "sparseness,complexity"
    rc, out, _ = _run(capsys, "--reliability", str(tmp_path), "--metrics", metrics, "--json")
    assert rc == 0
    report = json.loads(out)
    assert report["photos"] == ["cat.jpg", "coffee.jpg", "rocket.jpg"]
    assert len(report["methods"]) >= 5 and set(report["reliability"]) == set(metrics.split(","))
    for name, values in report["values"].items():
        rows = np.array(values, dtype=float)
        assert rows.shape == (3, len(report["methods"]))
        expected = np.mean([spearman(a, b) for a, b in itertools.combinations(rows, 2)])
        assert report["reliability"][name] == pytest.approx(expected)
    rc, out, _ = _run(capsys, "--reliability", str(tmp_path), "--metrics", "sparseness")
    assert rc == 0 and "sparseness" in out and "mean Spearman" in out


def test_reliability_needs_two_photos_and_no_photo_with_it(use_small: LoadedModel, tmp_path: Path, capsys) -> None:
    shutil.copy(CAT, tmp_path / "cat.jpg")
    rc, _, err = _run(capsys, "--reliability", str(tmp_path))
    assert rc == 2 and "at least two photos" in err
    rc, _, err = _run(capsys, str(CAT), "--reliability", str(tmp_path))
    assert rc == 2 and "not both" in err


# ----------------------------------------------------------------------------- the object's mask


@pytest.fixture(scope="module")
def deeplab() -> TransferModel:
    spec = transfer_spec(task="segment", model="deeplabv3")
    return TransferModel(build_transfer(spec).eval(), spec, "random weights for a test")


def test_object_mask_is_the_segmentation_of_the_named_class(deeplab: TransferModel, monkeypatch) -> None:
    monkeypatch.setattr(object_mask_module, "shared_transfer", lambda **kwargs: deeplab)
    photo = Image.open(CAT).convert("RGB")
    found = segment(loaded=deeplab, image=photo, size=64)
    present = [c for c in found.classes if c.name != "__background__"]
    assert present  # random weights label something
    mask = object_mask(image=photo, name=present[0].name.upper(), size=64)
    np.testing.assert_array_equal(mask, found.mask == present[0].index)
    absent = next(c for c in object_classes() if c not in {p.name for p in found.classes})
    with pytest.raises(UserError, match=f"finds no {absent} in this photo"):
        object_mask(image=photo, name=absent, size=64)


def test_object_classes_are_the_voc_classes() -> None:
    classes = object_classes()
    assert len(classes) == 20 and "cat" in classes and "person" in classes and "__background__" not in classes
