"""SpRAy's clusters: hand-made maps with known groups, and a model that truly relies on a planted watermark."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from sklearn.metrics import adjusted_rand_score

from resnet_demo.audit import MAX_CLUSTERS, audit, downsample, spectral_clusters
from resnet_demo.core.model import build_model
from resnet_demo.core.weights import LoadedModel, Preprocessing, WeightsSpec
from resnet_demo.explain import prepare

SIZE = 112  # layer3, the default stage at this crop, is 7x7


def _blobs(centres: list[tuple[int, int]], sizes: list[int], *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps of Gaussian blobs at ``centres`` on noise, ``sizes`` maps each: maps (n, 64, 64), groups (n,).

    Each blob moves by at most a pixel: a group's maps differ by their noise, not by a structure of their own.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    maps, groups = [], []
    for g, ((cy, cx), n) in enumerate(zip(centres, sizes, strict=True)):
        jitter = rng.integers(-1, 2, size=(n, 2)) * (rng.random((n, 1)) < 0.2)
        for dy, dx in jitter:
            blob = np.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / (2 * 7.0**2))
            maps.append(np.clip(blob + 0.15 * rng.random((64, 64)), 0, 1))
            groups.append(g)
    return np.array(maps, dtype=np.float32), np.array(groups)


def test_hand_made_groups_are_the_clusters_the_odd_one_first() -> None:
    maps, groups = _blobs([(32, 32), (8, 8), (56, 10)], [40, 12, 20])
    found = spectral_clusters(downsample(maps))
    assert found.count == 3
    assert adjusted_rand_score(groups, found.labels) == 1.0  # scikit-learn's measure: the same partition
    # The main (largest) group is last, at distance 0; the others by their distance from it, farthest first.
    assert set(found.labels[groups == 0]) == {2} and found.distances[-1] == 0.0
    assert list(found.distances) == sorted(found.distances, reverse=True)
    means = {g: downsample(maps[groups == g]).mean(0) for g in range(3)}
    far = max((1, 2), key=lambda g: np.linalg.norm(means[g] - means[0]))
    assert set(found.labels[groups == far]) == {0}
    # The typical images of a cluster are its members, and the same on every run.
    for k in range(3):
        assert set(found.typical[k]) == set(np.flatnonzero(found.labels == k))
    again = spectral_clusters(downsample(maps))
    assert np.array_equal(again.labels, found.labels) and again.typical == found.typical


def test_a_class_over_the_spectral_cap_is_clustered_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dense graph is n x n: over the cap, a seeded sample is clustered and every map joins the
    # nearest cluster, so 10,000 maps cost what MAX_SPECTRAL maps cost. A small cap shows it here.
    from resnet_demo.audit import clusters

    maps, groups = _blobs([(32, 32), (8, 8), (56, 10)], [60, 30, 30])
    monkeypatch.setattr(clusters, "MAX_SPECTRAL", 60)
    calls: list[int] = []
    affinity = clusters._affinity
    monkeypatch.setattr(clusters, "_affinity", lambda x: calls.append(len(x)) or affinity(x))
    found = spectral_clusters(downsample(maps))
    assert calls == [60]  # the graph of the sample only
    assert found.count == 3 and adjusted_rand_score(groups, found.labels) == 1.0
    assert list(found.distances) == sorted(found.distances, reverse=True) and found.distances[-1] == 0.0
    for k in range(3):
        assert set(found.typical[k]) == set(np.flatnonzero(found.labels == k))


def test_one_strategy_is_one_cluster_and_many_are_capped() -> None:
    maps, _ = _blobs([(32, 32)], [30], seed=1)
    assert spectral_clusters(downsample(maps)).count == 1
    corners = [(8 + 16 * (i % 4), 8 + 24 * (i // 4)) for i in range(12)]
    maps, groups = _blobs(corners, [6] * 12, seed=2)
    found = spectral_clusters(downsample(maps))
    assert 2 <= found.count <= MAX_CLUSTERS
    assert adjusted_rand_score(groups, found.labels) > 0.5  # merged neighbours, never a random split
    assert spectral_clusters(downsample(maps[:2])).count == 1  # too few maps to split


def _photo(rng: np.random.Generator, kind: int, *, marked: bool) -> Image.Image:
    """A red disc (kind 0) or a blue square (kind 1) near the centre on grey noise; ``marked``: a black
    and white checker in the top-left corner (a sixth of the side)."""
    img = Image.fromarray(rng.normal(128, 20, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    cx, cy = SIZE // 2 + rng.integers(-6, 7, 2)
    r = SIZE // 5
    shape = draw.ellipse if kind == 0 else draw.rectangle
    shape([cx - r, cy - r, cx + r, cy + r], fill=(200, 60, 60) if kind == 0 else (60, 60, 200))
    if marked:
        cell = SIZE // 18
        for i in range(3):
            for j in range(3):
                white = (i + j) % 2 == 0
                box = [i * cell, j * cell, (i + 1) * cell - 1, (j + 1) * cell - 1]
                draw.rectangle(box, fill=(255, 255, 255) if white else (0, 0, 0))
    return img


@pytest.fixture(scope="module")
def clever_hans() -> LoadedModel:
    """A ResNet-50 whose every training disc carried the watermark: it learned the watermark.

    Random convolutions with every residual branch zeroed pass local projections of the photo up
    (BatchNorm calibrated on the photos); the ``fc`` layer alone is trained on them, in a second.
    """
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    pre = Preprocessing(resize_size=SIZE, crop_size=SIZE)
    model = build_model("resnet50", num_classes=2, zero_init_residual=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the average over the calibration batch
    train = [(_photo(rng, kind, marked=kind == 0), kind) for kind in (0, 1) for _ in range(8)]
    x = torch.cat([prepare(image=img, preprocessing=pre).tensor for img, _ in train])
    y = torch.tensor([kind for _, kind in train])
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        features = torch.flatten(model.avgpool(model.forward_stages(x, stop="layer4")[1]["layer4"]), 1)
    head = torch.nn.Linear(2048, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(features), y).backward()
        opt.step()
    model.fc.load_state_dict(head.state_dict())
    model.requires_grad_(False)
    spec = WeightsSpec(
        arch="resnet50", name="hans", label="generated", categories=("circle", "square"), preprocessing=pre,
        pretrained=True,
    )  # fmt: skip
    return LoadedModel(model, spec)


def test_planted_watermark_is_its_own_cluster_on_the_corner(clever_hans: LoadedModel, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    for kind, name in enumerate(("circle", "square")):
        (data / name).mkdir(parents=True)
        for k in range(12 if kind == 0 else 4):
            marked = kind == 0 and k % 2 == 0  # half of the discs carry the watermark
            _photo(rng, kind, marked=marked).save(data / name / f"{k:02d}_{'marked' if marked else 'plain'}.png")
    result = audit(data=data, model=clever_hans, out=tmp_path / "out")
    assert result.summary["stage"] == "layer3"
    with (tmp_path / "out" / "images.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    circle = next(c for c in result.summary["classes"] if c["name"] == "circle")
    marked = {i for i, r in enumerate(rows) if "marked" in r["path"]}
    assert len(marked) == 6
    own = [cl for cl in circle["clusters"] if set(cl["members"]) == marked]
    assert len(own) == 1, [cl["members"] for cl in circle["clusters"]]
    mean = np.load(tmp_path / "out" / own[0]["mean_map"])
    corner = mean[: SIZE // 4, : SIZE // 4]
    assert np.unravel_index(mean.argmax(), mean.shape) < (SIZE // 4, SIZE // 4)
    assert corner.mean() > 3 * mean[SIZE // 4 :, SIZE // 4 :].mean()
    others = [cl for cl in circle["clusters"] if cl is not own[0]]
    assert all(
        np.load(tmp_path / "out" / cl["mean_map"])[: SIZE // 4, : SIZE // 4].mean() < corner.mean() / 2 for cl in others
    )
