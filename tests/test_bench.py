"""The benchmark commands run their rows and report them."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from resnet_demo.__main__ import main
from resnet_demo.bench.report import markdown, text_table, time_interleaved


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_smoke(tmp_path: Path, capsys, torch_home: Path) -> None:
    md = tmp_path / "bench.md"
    rc = main(
        ["bench", "--repeats", "1", "--warmup", "0", "--size", "64", "--json", "--markdown", str(md), "--methods"]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]["resnet50"]}
    assert rows["torchvision resnet50 eager forward (unit)"]["ratio"] == pytest.approx(1.0)
    for name in (
        "engine: plain prediction",
        "engine: full explain",
        "engine: all-stage Grad-CAM",
        "naive: 2 forwards + captum LayerGradCam x5",
    ):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] == report["goals"].get(name)
    # --methods: every on-demand method computed afresh on each call.
    for name in (
        "engine: Grad-CAM stem on demand",
        "engine: Guided Grad-CAM (layer4)",
        "engine: Integrated Gradients",
        "engine: Occlusion",
    ):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] is None
    assert {"torch", "threads", "cpu", "python"} == set(report["environment"])
    assert "| engine: full explain |" in md.read_text()


def test_bench_text_output(capsys, torch_home: Path) -> None:
    rc = main(["bench", "--repeats", "1", "--warmup", "0", "--size", "32", "--no-reference"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("resnet50 at 32x32, ")
    assert lines[1].split() == ["pipeline", "median", "ms", "min", "ms", "ratio", "min", "ratio", "goal"]
    names = [line[:44].rstrip() for line in lines[2:6]]
    assert names == [
        "torchvision resnet50 eager forward (unit)",
        "engine: plain prediction",
        "engine: full explain",
        "engine: all-stage Grad-CAM",
    ]
    assert "<= 0.5x" in lines[3] and lines[2].endswith("x  ")


def test_bench_train_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    fake = types.ModuleType("resnet_demo.bench.train")
    fake.main = lambda args: seen.update(vars(args)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "resnet_demo.bench.train", fake)
    assert main(["bench", "--train", "--repeats", "2"]) == 0
    assert seen["arch"] == ["resnet50"] and seen["batch_size"] == 8 and seen["repeats"] == 2
    assert seen["json"] is False and seen["warmup"] == 1 and seen["device"] == "auto"
    assert main(["bench", "--train", "--arch", "resnet101", "--json"]) == 0
    assert seen["arch"] == ["resnet101"] and seen["repeats"] == 5 and seen["json"] is True


def test_timing_is_interleaved_and_rotates() -> None:
    calls: list[str] = []
    rows = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = time_interleaved(rows, repeats=2, warmup=1)
    assert calls == list("abc" * 3) and all(len(t) == 2 for t in times.values())
    calls.clear()
    time_interleaved(rows, repeats=2, warmup=1, rotate=True)
    assert calls == list("abc" + "bca" + "cab")


def test_tables_share_one_layout() -> None:
    lines = text_table([("name", 6), ("ms", 5), ("goal", 0)], [["a", "1.5", "met"], ["bb", "10.0", ""]])
    assert lines == ["name      ms  goal", "a        1.5  met", "bb      10.0  "]
    md = markdown("Intro.", ["name", "ms", "x", "goal"], {"resnet50": [["a", "1.5", "2", ""]]})
    assert md.split("\n") == [
        "Intro.",
        "",
        "**resnet50**",
        "",
        "| name | ms | x | goal |",
        "|---|---:|---:|---|",
        "| a | 1.5 | 2 |  |",
        "",
    ]


@pytest.mark.slow
def test_training_benchmark_runs_its_rows(capsys: pytest.CaptureFixture[str]) -> None:
    from resnet_demo.bench import train

    # The `bench --train` command passes its own namespace: a list of arches, no --device.
    args = argparse.Namespace(arch=["resnet50"], json=True, repeats=1, batch_size=2, size=32, warmup=0)
    assert train.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"]["resnet50"]
    assert [r["name"] for r in rows][0].startswith("reference") and len(rows) == 4
    assert all(r["images_per_s"] > 0 for r in rows) and rows[0]["ratio"] == 1.0


def test_bench_trust_rows(capsys, torch_home: Path) -> None:
    rc = main(["bench", "--trust", "--repeats", "1", "--warmup", "0", "--size", "32", "--masks", "64", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]["resnet50"]}
    unit = "torchvision resnet50 eager forward (unit)"
    assert rows[unit]["ratio"] == pytest.approx(1.0)
    more = next(name for name in rows if name.startswith("one more cheap method ("))
    for name, goal in (
        ("every cheap method at every stage", 2.2),
        (more, 0.05),
        ("deletion + insertion, per image", 1.10),
    ):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] == goal
    # The curves are a ratio to the batched forward per image, the rest to the unit.
    assert rows["deletion + insertion, per image"]["reference"] == "batched forward of 8, per image"
    assert rows["batched forward of 8, per image"]["reference"] == unit
    # The relevance, concept and perturbation methods, each against its own reference.
    assert rows["lrp"]["goal"] == 3.0 and rows["lrp"]["reference"] == unit
    assert rows["crp (k = 6) at layer4"]["goal"] == 8.0 and rows["crp (k = 6) at layer3"]["median_s"] > 0
    assert rows["DFF at layer4 on an existing analysis"]["goal"] == 0.3
    assert rows["RISE, 64 masks"]["reference"] == "batched forward of 64 images"
    assert rows["SmoothGrad, 25 samples"]["reference"] == "25 batched forward + backwards"
    assert [r["name"] for r in report["results"]["resnet50"]].count(unit) == 1
    assert rows["the whole card of one map"]["goal"] == 60.0 and rows["the whole card of one map"]["median_s"] > 0
    road = next(name for name in rows if name.startswith("road alone ("))
    assert rows[road]["goal"] == pytest.approx(1.1 * int(road.split("(")[1].split()[0]), rel=0.05)


@pytest.fixture
def transfer_cache(torch_home: Path) -> Iterator[None]:
    """No published files and an empty cache of transfer models: every model runs on random weights."""
    from resnet_demo.transfer.weights import clear_transfer_cache

    clear_transfer_cache()
    yield
    clear_transfer_cache()


def _snapshot(task: str, model: str) -> tuple[Any, dict[str, torch.Tensor], dict[str, float]]:
    """The shared model, a copy of its parameters and buffers, and its score thresholds."""
    from resnet_demo.transfer.weights import shared_transfer

    net = shared_transfer(task=task, model=model, fallback_to_random=True).model
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return net, state, _thresholds(net)


def _thresholds(net: Any) -> dict[str, float]:
    return {name: float(m.score_thresh) for name, m in [("", net), *net.named_modules()] if hasattr(m, "score_thresh")}


def _unchanged(net: Any, state: dict[str, torch.Tensor], thresholds: dict[str, float]) -> None:
    after = net.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert not any(p.requires_grad for p in net.parameters())
    # The detector's own cut (RetinaNet's, or Faster R-CNN's box head's; its RPN keeps 0.0) is as built.
    assert _thresholds(net) == thresholds and thresholds.get("roi_heads", thresholds.get("")) == 0.05


def _check_rows(rows: list[dict[str, Any]], *, features: bool) -> None:
    from resnet_demo.bench.transfer import GOAL

    names = ["classifier forward (resnet50)", "model forward", "explain: layer4", "explain: 5 stages"]
    assert [r["name"] for r in rows] == names + (["explain: 5 stages + feature grids"] if features else [])
    for r in rows:
        assert r["median_s"] > 0 and math.isfinite(r["median_s"])
        assert r["vs_classifier"] > 0 and math.isfinite(r["vs_classifier"])
    assert rows[0]["vs_classifier"] == 1.0 and rows[0]["vs_forward"] is None and rows[1]["vs_forward"] is None
    for r in rows[2:]:  # every explanation is also a ratio to the model's own forward
        assert r["vs_forward"] > 0 and math.isfinite(r["vs_forward"])
    assert [r["goal"] for r in rows] == [None, None, GOAL, GOAL] + ([None] if features else [])


def test_bench_transfer_through_the_command(tmp_path: Path, capsys, transfer_cache: None) -> None:
    net, state, thresholds = _snapshot("detect", "retinanet")
    md = tmp_path / "transfer.md"
    rc = main(
        [
            "bench",
            "--transfer",
            "--transfer-models",
            "fcn,retinanet",
            "--size",
            "64",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            "--markdown",
            str(md),
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["photo"] == [640, 480]
        and report["size"] == 64
        and {"torch", "threads", "cpu"} == set(report["environment"])
    )
    fcn, retina = report["results"]
    assert fcn["label"].startswith("fcn resnet50") and retina["label"].startswith("retinanet resnet50")
    assert fcn["input"] == [64, 85] and retina["input"][0] == 64 and retina["input"][1] % 32 == 0
    assert fcn["untrained"] and fcn["note"] == ""  # segmentation always has a class to explain
    assert retina["untrained"] and "score cut" in retina["note"]
    for result in (fcn, retina):
        _check_rows(result["rows"], features=True)
    text = md.read_text()
    assert "| explain: 5 stages |" in text and "<= 2.5x model's forward: " in text and "score cut" in text
    _unchanged(net, state, thresholds)


def test_bench_transfer_rows_of_a_detector(transfer_cache: None) -> None:
    import dataclasses

    from resnet_demo.bench.transfer import bench_transfer, synthetic_photo

    net, state, thresholds = _snapshot("detect", "fasterrcnn")
    heads = net.roi_heads
    result = bench_transfer(
        task="detect", model="fasterrcnn", image=synthetic_photo(), size=64, repeats=1, warmup=0, features=False
    )
    _check_rows([dataclasses.asdict(r) for r in result["rows"]], features=False)
    assert result["untrained"] and "score cut" in result["note"]
    assert net.roi_heads is heads  # the copy's heads replaced its own, never the shared model's
    _unchanged(net, state, thresholds)


def test_bench_transfer_models_are_checked(capsys) -> None:
    from resnet_demo.bench.transfer import DEFAULT_MODELS, parse_models
    from resnet_demo.core.errors import UserError

    assert [m for _, m, _ in parse_models(None)] == list(DEFAULT_MODELS)
    assert parse_models(" fcn:resnet101 , maskrcnn") == [
        ("segment", "fcn", "resnet101"),
        ("detect", "maskrcnn", "resnet50"),
    ]
    for bad in ("unet", "fasterrcnn:resnet101", " , "):
        with pytest.raises(UserError):
            parse_models(bad)
    assert main(["bench", "--transfer", "--transfer-models", "unet"]) == 2
    assert "unet" in capsys.readouterr().err


def test_serve_verdicts_judge_goals_and_leave_other_rows_alone() -> None:
    from resnet_demo.bench.serve import GOALS, _verdict

    share = "16 clients: share of the time in /explain's handler"
    assert _verdict(share, 0.61).endswith(": met")
    assert _verdict(share, 0.59).endswith(": NOT met")
    assert _verdict("browser: upload to every panel (x engine)", 5.2).endswith(": NOT met")
    assert _verdict(share, None).endswith(": skipped")
    informational = [row for row, (goal, _b, _l) in GOALS.items() if goal.startswith("(")]
    assert "16 clients: share of the ideal throughput" in informational
    for row in informational:  # nothing to meet: the text alone, whatever the value
        assert _verdict(row, 0.0) == _verdict(row, 1e9) == GOALS[row][0]
