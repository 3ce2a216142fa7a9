"""The audit's speed (``python -m resnet_demo bench --audit``), side by side in one run.

Rows, per architecture:

* images per second of the audit's batched Grad-CAM (:func:`resnet_demo.audit.batch_gradcam`:
  the forward and the maps of a batch in one pass) at every stage, against torchvision's
  batched eager forward alone on the same images, interleaved so that a noisy neighbour hits
  both alike, each ratio paired within its round, then the median. Goals: >= 0.85x at
  ``layer4`` (no backward), >= 0.4x at every stage;
* the clustering of 1,000 maps (:func:`resnet_demo.audit.spectral_clusters` on maps
  downsampled by :func:`resnet_demo.audit.downsample`). Goal: <= 2 s.

The weights are ``--weights`` (random when unavailable: speed does not depend on them); the
images are random tensors of the crop size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch
import torchvision.models as tvm

from ..audit import batch_gradcam, downsample, spectral_clusters
from ..core.model import STAGES
from ..core.weights import load_model
from ..explain import inference_model
from .report import cpu_description, text_table, time_interleaved

__all__ = ["GOALS", "bench_audit", "bench_clustering", "main"]

GOALS = {"layer4": 0.85, "other": 0.4, "clustering_s": 2.0}
_TV = {"resnet50": tvm.resnet50, "resnet101": tvm.resnet101, "resnet152": tvm.resnet152}


def bench_audit(
    *, arch: str = "resnet50", weights: str = "random", batch_size: int = 16, image_size: int = 224,
    repeats: int = 5, warmup: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Images per second of batched Grad-CAM at every stage and of torchvision's eager forward, and the ratios."""
    loaded = load_model(arch=arch, weights=weights, fallback_to_random=True)
    net = inference_model(loaded.model)
    reference = _TV[arch]().eval()
    reference.load_state_dict(loaded.model.state_dict(), strict=False)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager() -> None:
        with torch.inference_mode():
            reference(x)

    rows = {"torchvision forward": eager}
    rows.update({stage: (lambda s=stage: batch_gradcam(net, x_cl, stage=s)) for stage in STAGES})
    times = time_interleaved(rows, repeats=repeats, warmup=warmup, rotate=True)
    base = times["torchvision forward"]
    result: dict[str, Any] = {"torchvision_images_per_s": batch_size / statistics.median(base), "stages": {}}
    for stage in STAGES:
        ratio = statistics.median(b / t for b, t in zip(base, times[stage], strict=True))
        goal = GOALS["layer4"] if stage == "layer4" else GOALS["other"]
        result["stages"][stage] = {
            "images_per_s": batch_size / statistics.median(times[stage]),
            "ratio": ratio,
            "goal": goal,
            "met": ratio >= goal,
        }
    return result


def bench_clustering(*, maps: int = 1000, size: int = 224, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Seconds to downsample and cluster ``maps`` maps (four strategies, blobs on noise), the median of ``repeats``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    centres = rng.random((4, 2))
    which = rng.integers(0, 4, maps)
    blobs = np.exp(
        -((yy[None] - centres[which, 0, None, None]) ** 2 + (xx[None] - centres[which, 1, None, None]) ** 2) / 0.02
    )
    stack = (blobs + 0.2 * rng.random((maps, size, size))).astype(np.float32)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        found = spectral_clusters(downsample(stack))
        seconds.append(time.perf_counter() - t0)
    s = statistics.median(seconds)
    return {
        "maps": maps,
        "seconds": s,
        "clusters": found.count,
        "goal_s": GOALS["clustering_s"],
        "met": s <= GOALS["clustering_s"],
    }


def main(args: argparse.Namespace) -> int:
    """Run ``bench --audit``: reads ``arch``, ``weights``, ``size``, ``repeats``, ``warmup`` and ``json``
    (batch 16, as the audit's default)."""
    size = args.size or 224
    results = {
        arch: bench_audit(
            arch=arch, weights=args.weights, image_size=size, repeats=min(args.repeats, 5), warmup=args.warmup
        )
        for arch in args.arch
    }
    clustering = bench_clustering()
    where = f"CPU {cpu_description()}, {torch.get_num_threads()} threads"
    if args.json:
        print(json.dumps({"machine": where, "size": size, "results": results, "clustering": clustering}, indent=2))
        return 0
    for arch, r in results.items():
        print(f"{arch}, batch 16 at {size}x{size}; {where}")
        print(f"  torchvision's eager forward alone: {r['torchvision_images_per_s']:.1f} images/s")
        rows = [
            [
                stage,
                f"{s['images_per_s']:.1f}",
                f"{s['ratio']:.2f}x",
                f">= {s['goal']}x",
                "ok" if s["met"] else "MISSED",
            ]
            for stage, s in r["stages"].items()
        ]
        print("\n".join(text_table([("Grad-CAM at", 12), ("img/s", 8), ("ratio", 7), ("goal", 8), ("", 0)], rows)))
    ok = "ok" if clustering["met"] else "MISSED"
    print(f"clustering {clustering['maps']} maps: {clustering['seconds']:.2f} s (goal <= 2 s) {ok}")
    return 0
