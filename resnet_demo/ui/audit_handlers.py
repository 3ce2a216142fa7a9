"""The Audit tab's handler: a zip of images (or the sample set) audited, shown and offered as a report.

A plain function, so the tests call it directly; the tab wraps it in
:func:`~resnet_demo.ui.cancellation.cancellable`. The audit itself (:func:`resnet_demo.audit.audit`)
checks the data and the server's bounds; this module only turns its folder into the page's panels.
"""

from __future__ import annotations

import collections
import csv
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image

from ..audit import audit, open_audit_set
from ..core.errors import UserError
from ..core.render import colorize, overlay
from ..data import ZipLimits, make_sample_dataset
from ..explain import prepare
from .components import user_errors
from .model_choice import UNTRAINED_BANNER, app_message, resolve_model

__all__ = ["AUDIT_LIMITS", "MAX_AUDIT_IMAGES", "Audited", "run_audit", "SAMPLE", "limits_note"]

# A public Space's bounds on one audit (every image is a forward and a map on shared cores).
MAX_AUDIT_IMAGES = int(os.environ.get("RESNET_DEMO_AUDIT_MAX_IMAGES", "300"))
AUDIT_LIMITS = ZipLimits(max_entries=4 * MAX_AUDIT_IMAGES, max_total_bytes=200 * 1024**2)
SAMPLE = "sample"  # the data picker's value for the generated sample set
_KEEP_RUNS = 4  # output folders kept for their downloads; older ones are removed
_EXEMPLARS = 4
_MISCLASSIFIED = 24
_RUNS: collections.deque[Path] = collections.deque()
_RUNS_LOCK = threading.Lock()


class Audited(NamedTuple):
    """``/audit``'s outputs, by the tab's component names."""

    audit_summary: str  # Markdown: what was audited, the notes
    class_table: list[list[Any]]  # a row per class: name, images, accuracy, clusters, the odd cluster's size
    clusters: list[tuple[Image.Image, str]]  # per class and cluster: its mean map, then its typical images
    misclassified: list[tuple[Image.Image, str]]  # the misclassified images with their maps
    report: list[str]  # report.html and the whole folder as a zip


def limits_note() -> str:
    """What the page says about the bounds of one audit."""
    return (
        f"On this server an audit takes at most **{MAX_AUDIT_IMAGES} images** "
        f"({AUDIT_LIMITS.max_total_bytes // 1024**2} MB unpacked); run `python -m resnet_demo audit` "
        f"(or `torchrun ... -m resnet_demo audit`) on your own machine for more."
    )


def _new_run() -> Path:
    """A fresh folder for one audit's output; the oldest beyond :data:`_KEEP_RUNS` are removed."""
    folder = Path(tempfile.mkdtemp(prefix="resnet-demo-audit-run-"))
    with _RUNS_LOCK:
        _RUNS.append(folder)
        while len(_RUNS) > _KEEP_RUNS:
            shutil.rmtree(_RUNS.popleft(), ignore_errors=True)
    return folder


def _sample(folder: Path) -> Path:
    return make_sample_dataset(folder / "shapes", num_classes=3, images_per_class=8, image_size=96)


def _heat(path: Path) -> Image.Image:
    return Image.fromarray(colorize(np.load(path))).resize((160, 160), Image.Resampling.BILINEAR)


def _galleries(out: Path, summary: dict[str, Any], files: dict[str, Path], preprocessing: Any) -> tuple[list, list]:
    """The clusters' gallery (mean map, then exemplars over their photos) and the misclassified gallery."""
    maps = np.load(out / summary["maps"], mmap_mode="r")
    records = list(csv.reader((out / "images.csv").read_text(encoding="utf-8").splitlines()[1:]))

    def shown(row: int) -> Image.Image:
        crop = prepare(image=files[records[row][0]], preprocessing=preprocessing).crop
        return overlay(image=crop, heatmap=maps[row].astype(np.float32), opacity=0.5)

    clusters: list[tuple[Image.Image, str]] = []
    for c in summary["classes"]:
        for k, cl in enumerate(c["clusters"]):
            wrong = "" if cl["misclassified"] is None else f", {cl['misclassified']} wrong"
            clusters.append((_heat(out / cl["mean_map"]), f"{c['name']}, cluster {k}: {cl['size']} image(s){wrong}"))
            clusters += [(shown(r), f"{c['name']} {k}: {records[r][0]}") for r in cl["typical"][:_EXEMPLARS]]
    wrong_rows = [i for i, r in enumerate(records) if r[4] == "false"][:_MISCLASSIFIED]
    misclassified = [(shown(r), f"{records[r][0]}: {records[r][1]} -> {records[r][2]}") for r in wrong_rows]
    return clusters, misclassified


def _table(summary: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            c["name"],
            c["images"],
            "" if c["accuracy"] is None else f"{c['accuracy']:.1%}",
            len(c["clusters"]),
            c["clusters"][0]["size"] if len(c["clusters"]) > 1 else "",
        ]
        for c in summary["classes"]
    ]


@user_errors
def run_audit(
    data: str | None,
    zip_file: str | None,
    arch: str,
    weights: str,
    checkpoint: str | None,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar; not an API input)
) -> Audited:
    """``/audit``: every image of a zip (or of the sample set, ``data`` = "sample") through the model,
    each class's Grad-CAM maps clustered; the per-class table, the galleries and the report."""
    if data != SAMPLE and not zip_file:
        raise UserError("Upload a .zip of images (class folders give labels), or pick the sample set.")
    try:
        loaded = resolve_model(arch=arch, weights=weights, checkpoint=checkpoint)
    except UserError as e:
        raise UserError(app_message(e)) from e
    folder = _new_run()
    source = _sample(folder) if data == SAMPLE else Path(zip_file)  # type: ignore[arg-type]
    out = folder / "audit"
    result = audit(
        data=source,
        model=loaded,
        out=out,
        limits=AUDIT_LIMITS,
        max_images=MAX_AUDIT_IMAGES,
        progress=lambda f: progress(f, desc="Auditing"),
    )
    summary = result.summary
    assert summary is not None
    archive = shutil.make_archive(str(folder / "audit"), "zip", out)
    # The photos again for the galleries: a zip is unpacked once more, as the audit did (it kept nothing).
    files = _photo_files(source, folder)
    clusters, misclassified = _galleries(out, summary, files, loaded.spec.preprocessing)
    accuracy = "" if summary["accuracy"] is None else f", accuracy **{summary['accuracy']:.1%}**"
    banner = f" **{UNTRAINED_BANNER}: random weights.**" if loaded.untrained else ""
    notes = "".join(f"\n- {n}" for n in summary["notes"])
    text = (
        f"**{summary['images']} image(s)** audited with {summary['method']} at {summary['stage']}{accuracy}."
        f"{banner}{notes}"
    )
    return Audited(
        audit_summary=text,
        class_table=_table(summary),
        clusters=clusters,
        misclassified=misclassified,
        report=[str(out / "report.html"), archive],
    )


def _photo_files(source: Path, folder: Path) -> dict[str, Path]:
    """Each images.csv path -> a file to read it from."""
    found = open_audit_set(source, unpack_to=folder / "photos", limits=AUDIT_LIMITS)
    return {item.path: item.file for item in found.items}
