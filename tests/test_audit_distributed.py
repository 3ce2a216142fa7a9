"""``torchrun --nproc-per-node 2 -m resnet_demo audit``: two CPU processes (gloo) write what one writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from resnet_demo.__main__ import main as cli
from resnet_demo.data import make_sample_dataset

from .conftest import ROOT


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # two processes on a shared machine: one core each
        "RESNET_DEMO_OFFLINE": "1",
    }


def _audit(*launcher: str, data: Path, weights: Path, out: Path) -> None:
    args = ["-m", "resnet_demo", "audit", str(data), "--weights", str(weights), "--out", str(out), "--batch-size", "2"]
    done = subprocess.run(
        [sys.executable, *launcher, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_write_what_one_writes(tmp_path: Path, finetuned: Path) -> None:
    # 3 classes x 3 images: an odd count, so one process has a step with nothing to do.
    data = make_sample_dataset(tmp_path / "data", num_classes=3, images_per_class=3, image_size=40)
    (data / "circle" / "broken.png").write_bytes(b"\x89PNG not really")
    one_process = ["audit", str(data), "--weights", str(finetuned), "--out", str(tmp_path / "one"), "--batch-size", "2"]
    assert cli(one_process) == 0  # in this process: one process fewer to start
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _audit(*torchrun, data=data, weights=finetuned, out=tmp_path / "two")
    one = json.loads((tmp_path / "one" / "audit.json").read_text())
    two = json.loads((tmp_path / "two" / "audit.json").read_text())
    assert one["images"] == 9 and one["skipped"]["unreadable"] == ["circle/broken.png"]
    assert two == one
    assert (tmp_path / "two" / "images.csv").read_text() == (tmp_path / "one" / "images.csv").read_text()
    # The maps themselves: rows in the same order, equal up to the rounding of a batch's other members.
    np.testing.assert_allclose(
        np.load(tmp_path / "two" / "maps.npy").astype(np.float32),
        np.load(tmp_path / "one" / "maps.npy").astype(np.float32),
        atol=2e-2,
    )
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
