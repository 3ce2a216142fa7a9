"""How concentrated a map is: sparseness (the Gini index, Chalasani et al. 2020) and complexity
(the entropy of the normalised map, Bhatt et al. 2020).

Both read only the map, as Quantus 0.6 defines them: the absolute map divided by its
maximum (an all-zero map is left as it is), flattened. Sparseness adds 1e-7 to every
value (so an all-zero map counts as uniform), sorts them ascending and takes
``sum((2i - n - 1) a_i) / (n sum a)``: 0 for a uniform map, towards 1 when one pixel holds
everything. Complexity divides the map by its sum and takes ``-sum(p log(p + 1e-12))``:
ln(n) (its maximum) for a uniform map, 0 for a single pixel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["complexity", "max_complexity", "sparseness"]


def _normalised(heatmap: np.ndarray) -> np.ndarray:
    """|map| / max |map| as float64, flat; an all-zero map unchanged (no 0/0)."""
    a = np.abs(np.asarray(heatmap, dtype=np.float64)).ravel()
    top = a.max(initial=0.0)
    return a / top if top > 0 else a


def sparseness(heatmap: np.ndarray) -> float:
    """The Gini index of the map, in [0, 1): 0 uniform, higher when fewer pixels hold the evidence."""
    a = np.sort(_normalised(heatmap) + 1e-7)
    n = a.size
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * a).sum() / (n * a.sum()))


def complexity(heatmap: np.ndarray) -> float:
    """The entropy of the map as a distribution over its pixels, in nats: from 0 to ln(pixels)."""
    a = _normalised(heatmap)
    total = a.sum()
    if total == 0:
        return max_complexity(a.size)  # no evidence anywhere: as spread as a map can be
    p = a / total
    return float(-(p * np.log(p + 1e-12)).sum())


def max_complexity(pixels: int) -> float:
    """The complexity of a uniform map of ``pixels`` pixels: ln(pixels)."""
    return float(np.log(pixels))
