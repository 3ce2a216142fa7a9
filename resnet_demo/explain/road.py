"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022).

Deletion curves fill removed pixels with a fixed baseline, and the shape of the hole leaks
the class: the network reads the mask instead of what was under it. ROAD fills them by
*noisy linear imputation*: each removed pixel becomes the weighted mean of its eight
neighbours (1/6 for the four sides, 1/12 for the diagonals; known neighbours fixed,
removed ones solved for together, one sparse linear system shared by the three colour
channels), plus Gaussian noise of standard deviation 0.01, so that no hole is flat.

At each of the paper's percentiles p = 10, 20, ..., 90, *most relevant first* (MoRF)
removes the pixels at or above the map's p-th percentile and *least relevant first*
(LeRF) the pixels at or below its (100 - p)-th; each point is the class score after
imputation minus the photo's score (the probability of the class, as in
:mod:`.faithfulness`). The area of each curve is its mean over the percentiles, and the
combination is (LeRF - MoRF) / 2, in [-1, 1]: higher is more faithful (removing the
map's top pixels hurts, removing its bottom pixels does not). These are pytorch-grad-cam's
``ROADMostRelevantFirstAverage``, ``ROADLeastRelevantFirstAverage`` and ``ROADCombined``,
imputer included; equal map values (the zeros of a ReLU map) are ordered at random from
``seed``, as in :mod:`.faithfulness`, so a sparse map still removes the share asked for.
The 2 x 9 imputed images go through the network in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu
from torch import Tensor

from .faithfulness import Forward, forward_scores, pixel_ranks

__all__ = ["PERCENTILES", "Road", "impute", "road", "road_keep_masks"]

PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the paper's
NOISE = 0.01  # standard deviation of the noise added to imputed values (the paper's, in the input's units)
# (row offset, column offset) -> weight of that neighbour in the imputed value.
_NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


@dataclass(frozen=True, eq=False)
class Road:
    """ROAD of one map: the score change at each percentile, removing most and least relevant first."""

    percentiles: tuple[int, ...]
    morf: np.ndarray  # (P,) score after imputation minus the photo's, most relevant removed first
    lerf: np.ndarray  # (P,) the same, least relevant removed first
    photo_score: float

    @property
    def morf_area(self) -> float:
        """Mean of the MoRF curve, in [-1, 1]: lower is more faithful."""
        return float(self.morf.mean())

    @property
    def lerf_area(self) -> float:
        """Mean of the LeRF curve, in [-1, 1]: higher is more faithful."""
        return float(self.lerf.mean())

    @property
    def combined(self) -> float:
        """(LeRF area - MoRF area) / 2, in [-1, 1]: higher is more faithful."""
        return (self.lerf_area - self.morf_area) / 2


def _linear_fill(image: Tensor, keep: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """``image`` (C, H, W) with the pixels where ``keep`` is False solved for (no noise yet), and their
    flat indices. The system is symmetric: SuperLU's symmetric mode with a minimum-degree ordering solves
    it a quarter faster than the general one, to the same digits."""
    c, h, w = image.shape
    keep = np.asarray(keep, dtype=bool).ravel()
    removed = np.flatnonzero(~keep)
    flat = image.detach().cpu().reshape(c, -1).clone()
    if removed.size == 0:
        return flat.reshape(c, h, w), removed
    if removed.size == keep.size:
        raise ValueError("imputation needs at least one kept pixel")
    values = flat.numpy().astype(np.float64)
    variable = np.zeros(keep.size, dtype=np.int64)
    variable[removed] = np.arange(removed.size)
    rows, cols, weights = [], [], []
    rhs = np.zeros((removed.size, c))
    diagonal = np.ones(removed.size)
    r0, c0 = removed // w, removed % w
    for (dr, dc), weight in _NEIGHBOURS:
        r, q = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        diagonal[~inside] -= weight  # an edge pixel averages fewer neighbours
        eq = np.flatnonzero(inside)
        neighbour = r[eq] * w + q[eq]
        known = keep[neighbour]
        rhs[eq[known]] -= weight * values[:, neighbour[known]].T
        rows.append(eq[~known])
        cols.append(variable[neighbour[~known]])
        weights.append(np.full(int((~known).sum()), weight))
    index = np.arange(removed.size)
    rows.append(index)
    cols.append(index)
    weights.append(-diagonal)
    system = coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(removed.size, removed.size)
    ).tocsc()
    lu = splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solved = lu.solve(rhs).reshape(removed.size, c).T  # (C, removed)
    flat[:, torch.from_numpy(removed)] = torch.from_numpy(solved).float()
    return flat.reshape(c, h, w), removed


def _add_noise(filled: Tensor, removed: np.ndarray, noise: float, generator: torch.Generator | None) -> Tensor:
    if noise and removed.size:
        c = filled.shape[0]
        flat = filled.reshape(c, -1)
        flat[:, torch.from_numpy(removed)] += noise * torch.randn(c, removed.size, generator=generator)
    return filled


def impute(
    image: Tensor, keep: np.ndarray, *, noise: float = NOISE, generator: torch.Generator | None = None
) -> Tensor:
    """Noisy linear imputation of ``image`` (C, H, W) where ``keep`` (H, W) is False: a new tensor.

    Every removed pixel is solved as the weighted mean of its in-bounds neighbours (see the
    module docstring), then gets ``noise`` times standard Gaussian noise drawn from
    ``generator`` (shape (C, removed), in the removed pixels' row-major order).
    """
    filled, removed = _linear_fill(image, keep)
    return _add_noise(filled, removed, noise, generator)


def road_keep_masks(heatmap: np.ndarray, *, percentiles: Sequence[int] = PERCENTILES, seed: int = 0) -> np.ndarray:
    """The pixels each ROAD image keeps: (2, P, H, W) bool, MoRF then LeRF (see the module docstring).

    The map's order, ties broken at random from ``seed``, replaces its values: for a map
    without ties these are exactly pytorch-grad-cam's masks (``map < percentile(map, p)``
    for MoRF, ``1 - map < percentile(1 - map, p)`` for LeRF).
    """
    h, w = np.shape(heatmap)
    ranks = pixel_ranks(heatmap, seed).astype(np.float64)  # 0: most important
    importance = ranks.size - 1 - ranks  # distinct, in the map's order
    masks = np.empty((2, len(percentiles), h, w), dtype=bool)
    for i, p in enumerate(percentiles):
        masks[0, i] = (importance < np.percentile(importance, p)).reshape(h, w)
        masks[1, i] = (ranks < np.percentile(ranks, p)).reshape(h, w)
    return masks


def road(
    *,
    forward: Forward,
    image: Tensor,
    heatmap: np.ndarray,
    target: int,
    versus: int | None = None,
    percentiles: Sequence[int] = PERCENTILES,
    seed: int = 0,
    noise: float = NOISE,
    batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
) -> Road:
    """ROAD of ``heatmap`` (H, W) for class ``target`` on ``image`` (1, 3, H, W), a pure function.

    ``forward`` maps a batch to logits under inference mode; the photo and the 2 x P imputed
    images are forwarded ``batch_size`` at a time. The noise comes from a generator seeded
    with ``seed``, so the same inputs give the same curves.
    """
    masks = road_keep_masks(heatmap, percentiles=percentiles, seed=seed).reshape(-1, *np.shape(heatmap))
    generator = torch.Generator().manual_seed(seed)
    photo = image[0].detach().cpu().float()
    # SuperLU releases the GIL: the solves share the cores; the noise is then drawn in order, as impute() does.
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        solved = list(pool.map(lambda keep: _linear_fill(photo, keep), masks))
    filled = [_add_noise(f, removed, noise, generator) for f, removed in solved]
    if progress is not None:
        progress(0.5)  # the solves are half of the time
    batch = torch.stack([photo, *filled]).to(image.device)
    scores = forward_scores(forward=forward, images=batch, target=target, versus=versus, batch_size=batch_size)
    if progress is not None:
        progress(1.0)
    change = (scores[1:] - scores[0]).reshape(2, len(percentiles))
    for curve in change:
        curve.setflags(write=False)
    return Road(tuple(percentiles), change[0], change[1], float(scores[0]))
