"""The audit of a whole image set: every image through the model in batches, its map written as it
comes, then each class's maps clustered, and the output folder written at once.

Memory stays flat: a batch's maps go straight to a memory-mapped ``.npy`` on disk, and the
clustering reads only their (GRID x GRID) summaries, kept as they come. The output folder
is built under a temporary name beside ``out`` and renamed at the end: it is complete or
absent, whatever fails or is cancelled on the way.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.cancel import check_cancelled
from ..core.devices import configure_threads
from ..core.errors import UserError
from ..core.images import ImageError
from ..core.process_group import Dist
from ..core.weights import LoadedModel
from ..data.zips import ZipLimits
from ..explain import get_method, inference_model, prepare
from ..explain.baselines import make_baseline
from ..explain.faithfulness import deletion_insertion
from ..explain.network import input_of
from .clusters import downsample
from .distributed import gather_to_main
from .engine import batch_maps, default_stage
from .report import ImageRecord, summarise, write_outputs
from .sources import ZIP_LIMITS, AuditSet, open_audit_set

__all__ = ["AuditResult", "audit", "match_labels"]

Progress = Callable[[float], None]
BATCH_SIZE = 16
ONE_PROCESS = Dist()


def _no_progress(fraction: float) -> None:
    """Nobody is watching."""


@dataclass(frozen=True)
class AuditResult:
    """What an audit wrote (rank 0; the other processes of a run get ``summary`` None)."""

    out: Path
    summary: dict[str, Any] | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def match_labels(audit_set: AuditSet, categories: tuple[str, ...]) -> tuple[dict[str, int] | None, list[str]]:
    """The model's class index of every class folder, or None when they are not the model's classes;
    and the notes to say once (one sentence each)."""
    notes: list[str] = []
    if not audit_set.labelled:
        return None, notes
    exact = {c: i for i, c in enumerate(categories)}
    folded = {c.casefold(): i for i, c in enumerate(categories)}
    found = {name: exact.get(name, folded.get(name.casefold())) for name in audit_set.classes}
    missing = [name for name, i in found.items() if i is None]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        notes.append(
            f"The class folder(s) {shown} are not among the model's classes, so the images are audited "
            f"without labels (grouped by prediction, no accuracy)."
        )
        return None, notes
    if len(audit_set.classes) == 1:
        notes.append(f"Only one class folder ({audit_set.classes[0]}): its accuracy is the share predicted as it.")
    return {name: int(i) for name, i in found.items() if i is not None}, notes


def _load(items: list[Any], preprocessing: Any) -> tuple[list[int], list[Any], list[int]]:
    """Positions read, their prepared images, and positions unreadable."""
    good, prepared, bad = [], [], []
    for i, item in enumerate(items):
        try:
            prepared.append(prepare(image=item.file, preprocessing=preprocessing))
            good.append(i)
        except ImageError:
            bad.append(i)
    return good, prepared, bad


def _faithfulness(net: Any, x: torch.Tensor, maps: np.ndarray, targets: list[int]) -> list[tuple[float, float]]:
    """Deletion and insertion areas of each image's map (explain/faithfulness.py, blurred baseline)."""
    areas = []
    with torch.inference_mode():
        for i, t in enumerate(targets):
            image = x[i : i + 1]
            c = deletion_insertion(
                forward=net, image=image, baseline=make_baseline(image, kind="blur"), heatmap=maps[i], target=t
            )
            areas.append((c.deletion_auc, c.insertion_auc))
    return areas


def _batch_results(
    *,
    loaded: LoadedModel,
    net: Any,
    items: list[Any],
    indices: list[int],
    label_index: dict[str, int] | None,
    method: str,
    stage: str,
    topk: int,
    faithful: bool,
) -> tuple[list[tuple[int, ImageRecord | None]], np.ndarray, np.ndarray]:
    """One batch of this process's share: (item index, record or None when unreadable), maps, summaries."""
    categories = loaded.spec.categories
    good, prepared, bad = _load(items, loaded.spec.preprocessing)
    out: list[tuple[int, ImageRecord | None]] = [(indices[i], None) for i in bad]
    if not good:
        return out, np.zeros((0, 1, 1), np.float16), np.zeros((0, 1), np.float32)
    x = input_of(net, torch.cat([p.tensor for p in prepared]))
    got = batch_maps(net=net, loaded=loaded, x=x, prepared=prepared, method=method, stage=stage)
    probs = torch.softmax(got.logits, dim=1)
    top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
    targets = got.targets.tolist()
    areas = _faithfulness(net, x, got.maps, targets) if faithful else [None] * len(good)
    for row, i in enumerate(good):
        item = items[i]
        label = None if label_index is None else label_index.get(item.label or "")
        out.append(
            (
                indices[i],
                ImageRecord(
                    path=item.path,
                    label=None if label_index is None else item.label,  # folders not the model's: no labels
                    label_index=label,
                    predicted=categories[targets[row]],
                    predicted_index=targets[row],
                    confidence=round(float(probs[row, targets[row]]), 4),
                    correct=None if label is None else label == targets[row],
                    topk=tuple(
                        (categories[j], round(float(p), 4))
                        for p, j in zip(top_p[row], top_i[row].tolist(), strict=True)
                    ),
                    areas=None if areas[row] is None else tuple(round(a, 4) for a in areas[row]),
                ),
            )
        )
    return out, got.maps.astype(np.float16), downsample(got.maps)


def _check_options(*, loaded: LoadedModel, method: str, stage: str | None, batch_size: int) -> str:
    """The stage to explain (the default for the crop size when None), every option checked."""
    entry = get_method(method)
    if entry.space != "layer":
        raise UserError(f"{entry.label} attributes to pixels; an audit clusters a stage's maps: pick a layer method.")
    if batch_size < 1:
        raise UserError("The batch size must be at least 1.")
    return entry.check_stage(stage or default_stage(loaded.spec.preprocessing.crop_size))


def _partial_name(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"


def audit(
    *,
    data: str | Path,
    model: LoadedModel,
    out: str | Path,
    method: str = "gradcam",
    stage: str | None = None,
    batch_size: int = BATCH_SIZE,
    faithfulness: bool = False,
    topk: int = 5,
    dist: Dist = ONE_PROCESS,
    limits: ZipLimits = ZIP_LIMITS,
    max_images: int | None = None,
    progress: Progress = _no_progress,
) -> AuditResult:
    """Audit every image of ``data`` (see :mod:`.sources`) with ``model``; write the folder ``out``.

    ``method`` and ``stage`` name the maps (default Grad-CAM at :func:`.engine.default_stage`);
    ``faithfulness`` adds each map's deletion and insertion areas. Under ``torchrun`` pass
    this process's ``dist``: each process audits every world-th image and rank 0 writes.
    ``limits`` bound a zip, ``max_images`` the image files (a public server's bounds).
    Bad input is a :class:`UserError` in one sentence and leaves no ``out`` behind; an ``out``
    that exists is replaced only if it holds an earlier audit.
    """
    out = Path(out)
    stage = _check_options(loaded=model, method=method, stage=stage, batch_size=batch_size)
    if out.exists() and not (out / "audit.json").is_file():
        raise UserError(f"{out.name} exists and is not an earlier audit: choose another output folder.")
    configure_threads()
    unpack = Path(tempfile.mkdtemp(prefix="resnet-demo-audit-"))
    work = _partial_name(out) if dist.main else None
    try:
        audit_set = open_audit_set(data, unpack_to=unpack / "data", limits=limits)
        if max_images is not None and len(audit_set.items) > max_images:
            raise UserError(
                f"{audit_set.name} holds {len(audit_set.items):,} image files; this server audits {max_images:,} at most."
            )
        label_index, notes = match_labels(audit_set, model.spec.categories)
        if work is not None:
            work.mkdir(parents=True)
        summary = _run(
            audit_set=audit_set,
            loaded=model,
            work=work,
            label_index=label_index,
            notes=notes,
            method=method,
            stage=stage,
            batch_size=batch_size,
            faithful=faithfulness,
            topk=topk,
            dist=dist,
            progress=progress,
        )
        if work is not None:
            _replace(work, out)
            work = None
        return AuditResult(out, summary, tuple(notes))
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _replace(work: Path, out: Path) -> None:
    """Put the finished ``work`` folder at ``out``, an earlier audit there moved aside first."""
    old = None
    if out.exists():
        old = _partial_name(out)
        out.rename(old)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run(
    *,
    audit_set: AuditSet,
    loaded: LoadedModel,
    work: Path | None,
    label_index: dict[str, int] | None,
    notes: list[str],
    method: str,
    stage: str,
    batch_size: int,
    faithful: bool,
    topk: int,
    dist: Dist,
    progress: Progress,
) -> dict[str, Any] | None:
    """Every batch of this process's share, gathered on rank 0 into ``work``; rank 0's summary."""
    net = inference_model(loaded.model)
    items = list(audit_set.items)
    mine = list(range(dist.rank, len(items), dist.world))
    steps = math.ceil(math.ceil(len(items) / dist.world) / batch_size)
    crop = loaded.spec.preprocessing.crop_size
    maps = None
    if work is not None:
        maps = np.lib.format.open_memmap(
            work / "maps-by-file.npy", mode="w+", dtype=np.float16, shape=(len(items), crop, crop)
        )
    records: dict[int, ImageRecord | None] = {}
    small: dict[int, np.ndarray] = {}
    for step in range(steps):
        check_cancelled()
        chunk = mine[step * batch_size : (step + 1) * batch_size]
        results, batch, summaries = _batch_results(
            loaded=loaded,
            net=net,
            items=[items[i] for i in chunk],
            indices=chunk,
            label_index=label_index,
            method=method,
            stage=stage,
            topk=topk,
            faithful=faithful,
        )
        for part_results, part_maps, part_small in gather_to_main((results, batch, summaries), dist):
            row = 0
            for index, record in part_results:
                records[index] = record
                if record is not None:
                    assert maps is not None
                    maps[index] = part_maps[row]
                    small[index] = part_small[row]
                    row += 1
        progress(min(1.0, (step + 1) / steps))
    if work is None or maps is None:
        return None
    maps.flush()
    del maps
    return _finish(audit_set, loaded, work, records, small, label_index, notes, method, stage, faithful)


def _finish(
    audit_set: AuditSet,
    loaded: LoadedModel,
    work: Path,
    records: dict[int, ImageRecord | None],
    small: dict[int, np.ndarray],
    label_index: dict[str, int] | None,
    notes: list[str],
    method: str,
    stage: str,
    faithful: bool,
) -> dict[str, Any]:
    """Rank 0: the maps in row order, the per-class summary and clusters, every file written."""
    readable = [i for i in range(len(audit_set.items)) if records.get(i) is not None]
    unreadable = [audit_set.items[i].path for i in range(len(audit_set.items)) if records.get(i) is None]
    if not readable:
        raise UserError(f"None of the {len(unreadable)} image file(s) in {audit_set.name} could be read.")
    if unreadable:
        notes.append(f"Skipped {len(unreadable)} unreadable image file(s) (listed in audit.json).")
    if audit_set.not_images:
        notes.append(f"Skipped {len(audit_set.not_images)} file(s) that are not images (listed in audit.json).")
    if audit_set.loose:
        notes.append(f"Skipped {len(audit_set.loose)} image(s) lying beside the class folders (listed in audit.json).")
    by_file = np.load(work / "maps-by-file.npy", mmap_mode="r")
    final = np.lib.format.open_memmap(
        work / "maps.npy", mode="w+", dtype=np.float16, shape=(len(readable), *by_file.shape[1:])
    )
    for start in range(0, len(readable), 256):  # in chunks: memory stays flat
        final[start : start + 256] = by_file[readable[start : start + 256]]
    final.flush()
    del by_file, final
    (work / "maps-by-file.npy").unlink()
    rows = [records[i] for i in readable]
    summaries = np.stack([small[i] for i in readable])
    summary = summarise(
        records=rows,  # type: ignore[arg-type]
        summaries=summaries,
        maps_file=work / "maps.npy",
        out=work,
        labelled=label_index is not None,
    )
    summary.update(
        data=audit_set.name,
        arch=loaded.spec.arch,
        weights=Path(loaded.spec.name).name,
        untrained=loaded.untrained,
        method=method,
        stage=stage,
        crop_size=loaded.spec.preprocessing.crop_size,
        faithfulness=faithful,
        notes=notes,
        skipped={"unreadable": unreadable, "not_images": list(audit_set.not_images), "loose": list(audit_set.loose)},
    )
    write_outputs(summary=summary, records=rows, out=work, audit_set=audit_set, preprocessing=loaded.spec.preprocessing)  # type: ignore[arg-type]
    return summary
