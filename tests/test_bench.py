"""The benchmark commands run their rows and report them."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest

from resnet_demo.__main__ import main
from resnet_demo.bench.report import markdown, text_table, time_interleaved


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_smoke(tmp_path: Path, capsys, torch_home: Path) -> None:
    md = tmp_path / "bench.md"
    rc = main(["bench", "--repeats", "1", "--warmup", "0", "--size", "64", "--json", "--markdown", str(md),
               "--methods"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]["resnet50"]}
    assert rows["torchvision resnet50 eager forward (unit)"]["ratio"] == pytest.approx(1.0)
    for name in ("engine: plain prediction", "engine: full explain", "engine: all-stage Grad-CAM",
                 "naive: 2 forwards + captum LayerGradCam x5"):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] == report["goals"].get(name)
    # --methods: every on-demand method computed afresh on each call.
    for name in ("engine: Grad-CAM stem on demand", "engine: Guided Grad-CAM (layer4)",
                 "engine: Integrated Gradients", "engine: Occlusion"):
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
    assert names == ["torchvision resnet50 eager forward (unit)", "engine: plain prediction",
                     "engine: full explain", "engine: all-stage Grad-CAM"]
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
    assert md.split("\n") == ["Intro.", "", "**resnet50**", "", "| name | ms | x | goal |", "|---|---:|---:|---|",
                               "| a | 1.5 | 2 |  |", ""]


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
    rc = main(["bench", "--trust", "--repeats", "1", "--warmup", "0", "--size", "32", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]["resnet50"]}
    unit = "torchvision resnet50 eager forward (unit)"
    assert rows[unit]["ratio"] == pytest.approx(1.0)
    more = next(name for name in rows if name.startswith("one more cheap method ("))
    for name, goal in (("every cheap method at every stage", 2.2), (more, 0.05),
                       ("deletion + insertion, per image", 1.10)):
        assert rows[name]["median_s"] > 0 and rows[name]["goal"] == goal
    # The curves are a ratio to the batched forward per image, the rest to the unit.
    assert rows["deletion + insertion, per image"]["reference"] == "batched forward of 8, per image"
    assert rows["batched forward of 8, per image"]["reference"] == unit
