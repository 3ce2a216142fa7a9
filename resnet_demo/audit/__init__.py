"""Audit a whole image set: every image explained, the maps of each class clustered (SpRAy).

* :mod:`.sources`: the images of a folder of class sub-folders, a flat folder, or a zip of either;
* :mod:`.engine`: a batch's forward and maps in one pass (Grad-CAM batched, other methods per photo);
* :mod:`.clusters`: spectral relevance analysis, the clusters of one class's maps (numpy and torch);
* :mod:`.report`: ``audit.json``, ``images.csv``, the maps and ``report.html``;
* :mod:`.distributed`: several processes under ``torchrun``, rank 0 gathering and writing;
* :mod:`.run`: :func:`audit`, the whole run, its output folder written at once;
* :mod:`.cli`: the ``python -m resnet_demo audit`` command.
"""

from __future__ import annotations

from .clusters import GRID, MAX_CLUSTERS, Clustering, downsample, spectral_clusters
from .engine import BatchMaps, batch_gradcam, default_stage
from .run import AuditResult, audit
from .sources import AuditItem, AuditSet, open_audit_set

__all__ = [
    "GRID",
    "MAX_CLUSTERS",
    "AuditItem",
    "AuditResult",
    "AuditSet",
    "BatchMaps",
    "Clustering",
    "audit",
    "batch_gradcam",
    "default_stage",
    "downsample",
    "open_audit_set",
    "spectral_clusters",
]
