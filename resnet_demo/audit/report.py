"""What an audit writes: per-class summaries and clusters (``audit.json``), a row per image
(``images.csv``), the maps (``.npy``), and a self-contained ``report.html``.

Layout of the output folder::

    audit.json          the summary (see :func:`summarise`), paths relative to the folder
    images.csv          path, label, predicted, confidence, correct, cluster, topk (+ deletion_auc, insertion_auc)
    maps.npy            (images, H, W) float16 in [0, 1]: row i is images.csv's row i
    maps/class<c>_mean.npy, maps/class<c>_cluster<k>.npy   (H, W) float32 mean maps in [0, 1]
    report.html         mean maps, clusters with exemplars, confusion, misclassified images;
                        every image embedded as a base64 PNG, so it opens offline
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.render import colorize, overlay
from ..core.weights import Preprocessing
from ..explain import prepare
from .clusters import spectral_clusters
from .sources import AuditSet

__all__ = ["CSV_COLUMNS", "ImageRecord", "summarise", "write_outputs"]

CSV_COLUMNS = ("path", "label", "predicted", "confidence", "correct", "cluster", "topk")
_TYPICAL = 4  # exemplars shown and listed per cluster
_MISCLASSIFIED_SHOWN = 24
_THUMB = 112  # px of a picture in the report
_CHUNK = 256  # maps read at a time from maps.npy


@dataclass(frozen=True)
class ImageRecord:
    """One image's result: a row of images.csv."""

    path: str
    label: str | None  # the class folder's name; None without labels
    label_index: int | None  # the model's index of that class; None when unlabelled
    predicted: str
    predicted_index: int
    confidence: float  # the predicted class's probability
    correct: bool | None
    topk: tuple[tuple[str, float], ...]
    areas: tuple[float, float] | None = None  # (deletion, insertion) areas with --faithfulness


def _mean_map(maps: np.ndarray, rows: list[int]) -> np.ndarray:
    """The mean of ``maps[rows]`` read a chunk at a time, float32 (H, W)."""
    total = np.zeros(maps.shape[1:], dtype=np.float64)
    for start in range(0, len(rows), _CHUNK):
        total += maps[rows[start : start + _CHUNK]].astype(np.float64).sum(axis=0)
    return (total / max(len(rows), 1)).astype(np.float32)


def _groups(records: list[ImageRecord], labelled: bool) -> dict[int, list[int]]:
    """Class index -> its rows: by label, or by prediction without labels; in order of first row."""
    groups: dict[int, list[int]] = {}
    for row, r in enumerate(records):
        key = r.label_index if labelled and r.label_index is not None else r.predicted_index
        groups.setdefault(key, []).append(row)
    return groups


def summarise(
    *, records: list[ImageRecord], summaries: np.ndarray, maps_file: Path, out: Path, labelled: bool
) -> dict[str, Any]:
    """The per-class summary: accuracy, confusion row, mean map and clusters, mean maps written under ``out``.

    ``summaries`` are the maps on the clustering's grid, a row per record. Sets each record's
    cluster (returned in ``"cluster_of_row"``: the row's cluster within its class).
    """
    maps = np.load(maps_file, mmap_mode="r")
    (out / "maps").mkdir(exist_ok=True)
    classes = []
    cluster_of_row: list[int | None] = [None] * len(records)
    for c, (index, rows) in enumerate(_groups(records, labelled).items()):
        first = records[rows[0]]
        name = first.label if labelled and first.label is not None else first.predicted
        mean = out / "maps" / f"class{c}_mean.npy"
        np.save(mean, _mean_map(maps, rows))
        found = spectral_clusters(summaries[rows])
        clusters = []
        for k in range(found.count):
            members = [rows[i] for i in np.flatnonzero(found.labels == k)]
            path = out / "maps" / f"class{c}_cluster{k}.npy"
            np.save(path, _mean_map(maps, members))
            for m in members:
                cluster_of_row[m] = k if labelled else None
            clusters.append(
                {
                    "size": len(members),
                    "members": members,
                    "mean_map": path.relative_to(out).as_posix(),
                    "misclassified": sum(not records[m].correct for m in members) if labelled else None,
                    "typical": [rows[i] for i in found.typical[k][:_TYPICAL]],
                    "distance": round(float(found.distances[k]), 4),
                }
            )
        correct = sum(bool(records[r].correct) for r in rows)
        confusion: dict[str, int] = {}
        for r in rows:
            confusion[records[r].predicted] = confusion.get(records[r].predicted, 0) + 1
        classes.append(
            {
                "name": name,
                "index": index,
                "images": len(rows),
                "accuracy": round(correct / len(rows), 4) if labelled else None,
                "confusion": dict(sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))) if labelled else None,
                "mean_map": mean.relative_to(out).as_posix(),
                "eigenvalues": [round(float(v), 4) for v in found.eigenvalues],
                "clusters": clusters,
            }
        )
    accuracy = round(sum(bool(r.correct) for r in records) / len(records), 4) if labelled else None
    return {
        "images": len(records),
        "labelled": labelled,
        "grouped_by": "label" if labelled else "prediction",
        "accuracy": accuracy,
        "maps": "maps.npy",
        "classes": classes,
        "cluster_of_row": cluster_of_row,
    }


def _csv_row(r: ImageRecord, cluster: int | None) -> list[Any]:
    row = [
        r.path,
        r.label or "",
        r.predicted,
        f"{r.confidence:.4f}",
        "" if r.correct is None else str(r.correct).lower(),
        "" if cluster is None else cluster,
        "; ".join(f"{name}: {p:.4f}" for name, p in r.topk),
    ]
    if r.areas is not None:
        row += [f"{r.areas[0]:.4f}", f"{r.areas[1]:.4f}"]
    return row


def _write_csv(path: Path, records: list[ImageRecord], clusters: list[int | None]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        extra = ["deletion_auc", "insertion_auc"] if records and records[0].areas is not None else []
        writer.writerow([*CSV_COLUMNS, *extra])
        for r, k in zip(records, clusters, strict=True):
            writer.writerow(_csv_row(r, k))


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heat(heatmap: np.ndarray) -> str:
    return _png(Image.fromarray(colorize(heatmap)).resize((_THUMB, _THUMB), Image.Resampling.BILINEAR))


class _Pictures:
    """Overlays of rows' maps on the crops their model saw, read from the files on demand."""

    def __init__(self, audit_set: AuditSet, preprocessing: Preprocessing, maps: np.ndarray) -> None:
        self.files = {item.path: item.file for item in audit_set.items}
        self.preprocessing = preprocessing
        self.maps = maps

    def overlay(self, record: ImageRecord, row: int) -> str:
        crop = prepare(image=self.files[record.path], preprocessing=self.preprocessing).crop
        shown = overlay(image=crop, heatmap=self.maps[row].astype(np.float32), opacity=0.5)
        return _png(shown.resize((_THUMB, _THUMB), Image.Resampling.BILINEAR))


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt=""><figcaption>{html.escape(caption)}</figcaption></figure>'


def _class_section(cls: dict[str, Any], records: list[ImageRecord], out: Path, pictures: _Pictures) -> str:
    acc = "" if cls["accuracy"] is None else f", accuracy {cls['accuracy']:.1%}"
    parts = [f"<h2>{html.escape(cls['name'])}</h2><p>{cls['images']} image(s){acc}.</p>"]
    parts.append('<div class="row">' + _figure(_heat(np.load(out / cls["mean_map"])), "mean map") + "</div>")
    for k, cl in enumerate(cls["clusters"]):
        wrong = "" if cl["misclassified"] is None else f", {cl['misclassified']} misclassified"
        figs = [_figure(_heat(np.load(out / cl["mean_map"])), f"cluster {k}: mean")]
        figs += [_figure(pictures.overlay(records[r], r), records[r].path) for r in cl["typical"]]
        parts.append(
            f"<h3>Cluster {k}: {cl['size']} image(s){wrong}, distance {cl['distance']:.2f}</h3>"
            f'<div class="row">{"".join(figs)}</div>'
        )
    return "<section>" + "".join(parts) + "</section>"


def _confusion_table(classes: list[dict[str, Any]]) -> str:
    predicted = sorted({p for c in classes for p in (c["confusion"] or {})})
    head = "".join(f"<th>{html.escape(p)}</th>" for p in predicted)
    body = "".join(
        f"<tr><th>{html.escape(c['name'])}</th>"
        + "".join(f"<td>{c['confusion'].get(p, '')}</td>" for p in predicted)
        + "</tr>"
        for c in classes
    )
    return f"<h2>Confusion (rows: label, columns: prediction)</h2><table><tr><th></th>{head}</tr>{body}</table>"


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}figure{display:inline-block;margin:4px;width:"
    f"{_THUMB}px;font-size:11px;word-break:break-all}}figure img{{width:{_THUMB}px;height:{_THUMB}px}}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
)


def _html(summary: dict[str, Any], records: list[ImageRecord], out: Path, pictures: _Pictures) -> str:
    acc = "" if summary["accuracy"] is None else f" Accuracy {summary['accuracy']:.1%}."
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    body = [
        f"<h1>Audit of {html.escape(summary['data'])}</h1>",
        f"<p>{summary['images']} image(s), {html.escape(summary['arch'])} ({html.escape(summary['weights'])}), "
        f"{html.escape(summary['method'])} at {html.escape(summary['stage'])}.{acc}</p>",
        f"<ul>{notes}</ul>" if notes else "",
    ]
    if summary["labelled"]:
        body.append(_confusion_table(summary["classes"]))
        wrong = [r for r, rec in enumerate(records) if rec.correct is False][:_MISCLASSIFIED_SHOWN]
        figs = [_figure(pictures.overlay(records[r], r), f"{records[r].path} -> {records[r].predicted}") for r in wrong]
        body.append(f'<h2>Misclassified ({len(wrong)} shown)</h2><div class="row">{"".join(figs)}</div>')
    body += [_class_section(c, records, out, pictures) for c in summary["classes"]]
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Audit</title><style>{_STYLE}</style></head>'
        f"<body>{''.join(body)}</body></html>"
    )


def write_outputs(
    *,
    summary: dict[str, Any],
    records: list[ImageRecord],
    out: Path,
    audit_set: AuditSet,
    preprocessing: Preprocessing,
) -> None:
    """Write ``audit.json``, ``images.csv`` and ``report.html`` into ``out`` (maps are written already)."""
    clusters = summary.pop("cluster_of_row")
    _write_csv(out / "images.csv", records, clusters)
    (out / "audit.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    pictures = _Pictures(audit_set, preprocessing, np.load(out / summary["maps"], mmap_mode="r"))
    (out / "report.html").write_text(_html(summary, records, out, pictures), encoding="utf-8")
