"""The benchmark commands run their rows and report them."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_training_benchmark_runs_its_rows(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from resnet_demo import bench_train

    # The `bench --train` command passes its own namespace: a list of arches, no --device.
    args = argparse.Namespace(arch=["resnet50"], json=True, repeats=1, batch_size=2, size=32, warmup=0)
    assert bench_train.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"]["resnet50"]
    assert [r["name"] for r in rows][0].startswith("reference") and len(rows) == 4
    assert all(r["images_per_s"] > 0 for r in rows) and rows[0]["ratio"] == 1.0
