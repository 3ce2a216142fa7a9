"""Results kept per analysis and forgotten with it: the trust checks' curves, baselines and
randomised maps, each computed once per photo a visitor holds."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from ..core.cache import BoundedCache
from .analysis import Analysis

__all__ = ["AnalysisCache"]


class AnalysisCache:
    """Results kept per analysis, forgotten with it: a bounded dict per live :class:`Analysis`.

    Keyed weakly by the analysis (which hashes by identity), so nothing outlives the
    analysis a user holds; at most ``limit`` entries per analysis, the oldest go first.
    """

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()  # guards the weak dictionary; each analysis's cache has its own
        self._data: weakref.WeakKeyDictionary[Analysis, BoundedCache[Any, Any]] = weakref.WeakKeyDictionary()

    def get(self, analysis: Analysis, key: Any) -> Any:
        with self._lock:
            entries = self._data.get(analysis)
        return None if entries is None else entries.get(key)

    def put(self, analysis: Analysis, key: Any, value: Any) -> Any:
        """Store ``value`` unless another thread stored one first; returns the one kept."""
        with self._lock:
            entries = self._data.setdefault(analysis, BoundedCache(self._limit))
        return entries.put(key, value)
