"""Spectral relevance analysis (SpRAy; Lapuschkin et al., Nature Communications 2019): the maps of
one class clustered, so that a strategy the model uses on part of the class stands out.

In order, on maps already downsampled to a common grid (:func:`downsample`):

1. a symmetric k-nearest-neighbour graph of the maps (Euclidean distances; k = 10, or a third
   of a small class), weighted by a Gaussian of the distance with a scale per map (the distance
   to its k-th neighbour: Zelnik-Manor and Perona's self-tuning scale);
2. the normalised graph Laplacian L = I - D^-1/2 W D^-1/2 and its smallest eigenvalues;
3. the number of clusters by the eigengap: the k (at most :data:`MAX_CLUSTERS`) that
   maximises lambda_k - lambda_(k-1), where the graph falls apart into k loosely joined parts;
4. k-means (k-means++ seeding, a fixed seed, several restarts) on the first k eigenvectors,
   each row scaled to unit length (Ng, Jordan and Weiss, 2001);
5. the clusters ranked by how far their mean map lies from the main (largest) cluster's, the
   farthest first: the odd strategy comes first, the main one last.

A class of more than :data:`MAX_SPECTRAL` maps is clustered on a seeded sample of that many, and
every map then joins the cluster of the nearest mean map: the dense graph stays bounded.

numpy and torch only: no scikit-learn or SciPy at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GRID", "MAX_CLUSTERS", "MAX_SPECTRAL", "Clustering", "downsample", "spectral_clusters"]

GRID = 16  # every map is compared on a GRID x GRID grid: fine enough for a corner, cheap for 10,000 maps
MAX_CLUSTERS = 8
_NEIGHBOURS = 10  # k of the k-nearest-neighbour graph, at most; a small class gets n // 3 (3 at least)
_RESTARTS = 10
# The graph and its spectrum are dense, n x n: a larger class is clustered on a seeded sample of this
# many maps, and every map joins the cluster whose mean map is nearest (memory and time stay bounded).
MAX_SPECTRAL = 2000
_ITERATIONS = 100


@dataclass(frozen=True)
class Clustering:
    """The clusters of one class's maps, ranked (see the module docstring)."""

    labels: np.ndarray  # (n,) int: each map's cluster, 0 the farthest from the main cluster
    eigenvalues: np.ndarray  # the smallest eigenvalues of the Laplacian, ascending: the eigengap's evidence
    distances: np.ndarray  # (k,) each cluster's mean map's distance from the main cluster's, in rank order
    typical: tuple[tuple[int, ...], ...]  # per cluster, its members nearest its centre in the embedding, first

    @property
    def count(self) -> int:
        """How many clusters."""
        return len(self.distances)


def downsample(maps: np.ndarray | torch.Tensor, *, grid: int = GRID) -> np.ndarray:
    """(B, H, W) maps averaged over cells to (B, grid * grid) float32 rows: what the clustering compares."""
    t = torch.as_tensor(maps, dtype=torch.float32)[:, None]
    return F.adaptive_avg_pool2d(t, grid).flatten(1).numpy()


def _affinity(x: np.ndarray) -> np.ndarray:
    """The symmetric k-nearest-neighbour graph of the rows of ``x``, Gaussian weights with a local scale."""
    n = x.shape[0]
    # A group smaller than k cannot be a part of the graph of its own: small classes need a small k.
    k = max(1, min(_NEIGHBOURS, max(3, n // 3), n - 1))
    t = torch.from_numpy(np.nan_to_num(x)).double()
    d = torch.cdist(t, t)  # (n, n)
    d.fill_diagonal_(float("inf"))
    near, index = d.topk(k, dim=1, largest=False)  # (n, k)
    scale = near[:, -1].clamp_min(1e-12)  # each map's distance to its k-th neighbour
    weights = torch.exp(-(near**2) / (scale[:, None] * scale[index]))
    w = torch.zeros(n, n, dtype=torch.float64).scatter_(1, index, weights)
    return torch.maximum(w, w.T).numpy()


def _spectrum(w: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of the normalised Laplacian of ``w`` and their eigenvectors."""
    degree = w.sum(axis=1)
    inv = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    laplacian = np.eye(len(w)) - inv[:, None] * w * inv[None, :]
    values, vectors = np.linalg.eigh(laplacian)
    return np.clip(values[:count], 0.0, None), vectors[:, :count]


def _eigengap(values: np.ndarray) -> int:
    """The number of clusters k in 1..len(values)-1 with the widest gap lambda_k - lambda_(k-1)."""
    if len(values) < 2:
        return 1
    gaps = np.diff(values)  # gaps[k-1] = lambda_k - lambda_(k-1), 0-based eigenvalues
    return int(np.argmax(gaps)) + 1


def _kmeans(x: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding, the best of several restarts: labels and centres."""
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(_RESTARTS):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            total = d2.sum()
            pick = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
            centres.append(x[pick])
        c = np.array(centres)
        labels = np.zeros(len(x), dtype=np.int64)
        for _ in range(_ITERATIONS):
            labels = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(axis=1)
            moved = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
            if np.allclose(moved, c):
                break
            c = moved
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels, c)
    assert best is not None
    return best[1], best[2]


def _ranked(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster numbers renumbered by distance from the largest cluster's mean, farthest first; the distances."""
    ids = np.unique(labels)
    means = np.array([features[labels == j].mean(0) for j in ids])
    sizes = np.array([(labels == j).sum() for j in ids])
    main = int(np.argmax(sizes))  # ties: the first, which k-means' order made deterministic
    dist = np.linalg.norm(means - means[main], axis=1)
    order = sorted(range(len(ids)), key=lambda j: (-dist[j], -sizes[j], j))
    renumber = np.empty(labels.max() + 1, dtype=np.int64)
    for rank, j in enumerate(order):
        renumber[ids[j]] = rank
    return renumber[labels], dist[order]


def spectral_clusters(features: np.ndarray, *, max_clusters: int = MAX_CLUSTERS, seed: int = 0) -> Clustering:
    """SpRAy's clusters of one class's maps, given as (n, d) rows (:func:`downsample`); see the module docstring.

    A class of fewer than three maps is one cluster. Pure: the same rows and seed give the same clusters.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if n < 3:
        return Clustering(np.zeros(n, dtype=np.int64), np.zeros(0), np.zeros(1 if n else 0), (tuple(range(n)),))
    if n > MAX_SPECTRAL:
        return _sampled_clusters(x, max_clusters=max_clusters, seed=seed)
    values, vectors = _spectrum(_affinity(x), min(max_clusters, n - 1) + 1)
    k = _eigengap(values)
    embedding = vectors[:, :k]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    labels, centres = _kmeans(embedding, k, seed=seed) if k > 1 else (np.zeros(n, dtype=np.int64), embedding[:1])
    ranked, distances = _ranked(x, labels)
    return Clustering(ranked, values, distances, _typical(embedding, ranked, len(distances)))


def _typical(points: np.ndarray, ranked: np.ndarray, count: int) -> tuple[tuple[int, ...], ...]:
    """Per cluster, its members by distance from the cluster's centre in ``points``, nearest first."""
    typical = []
    for c in range(count):
        members = np.flatnonzero(ranked == c)
        centre = points[members].mean(0)
        near = np.argsort(np.linalg.norm(points[members] - centre, axis=1), kind="stable")
        typical.append(tuple(int(members[i]) for i in near))
    return tuple(typical)


def _sampled_clusters(x: np.ndarray, *, max_clusters: int, seed: int) -> Clustering:
    """:func:`spectral_clusters` of a class over :data:`MAX_SPECTRAL` maps: the clusters of a seeded
    sample, every map then in the cluster of the nearest mean map; typical members by that distance."""
    sample = np.sort(np.random.default_rng(seed).choice(len(x), MAX_SPECTRAL, replace=False))
    found = spectral_clusters(x[sample], max_clusters=max_clusters, seed=seed)
    means = np.array([x[sample][found.labels == c].mean(0) for c in range(found.count)])  # rank order
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(means)).numpy()  # (n, k)
    labels = d.argmin(axis=1)
    ranked, distances = _ranked(x, labels)
    return Clustering(ranked, found.eigenvalues, distances, _typical(x, ranked, len(distances)))
