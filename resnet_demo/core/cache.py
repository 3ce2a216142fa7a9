"""The one bounded cache: a thread-safe mapping that drops its least recently used entries.

Every cache of the project is bounded, because a public server keeps running: the shared
models, the transfer models, an analysis's maps and gradients, the faithfulness curves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``limit`` entries; past it, the least recently used entries go first.

    ``evictable(key)`` (default: every key) says which entries count toward the limit and
    may be dropped: the shared models keep named weights loaded and bound only the models
    read from files. Reads and writes take the cache's own lock, so it may be shared
    between threads; :meth:`get_or_make` holds it while it makes a value, so two threads
    asking for the same key make it once.
    """

    def __init__(self, limit: int, *, evictable: Callable[[K], bool] | None = None) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        self.limit = limit
        self._evictable = evictable
        self._entries: OrderedDict[K, V] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: K, value: V) -> V:
        """Store ``value`` unless ``key`` holds one already; returns the value kept.

        Keeping the first value matters when two threads compute the same entry: callers
        may already hold the first one.
        """
        with self._lock:
            kept = self._entries.setdefault(key, value)
            self._entries.move_to_end(key)
            self._trim()
            return kept

    def replace(self, key: K, value: V) -> V:
        """Store ``value`` for ``key``, replacing what it held."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            self._trim()
            return value

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``, made by ``make()`` under the lock when missing (made once)."""
        with self._lock:
            found = self.get(key)
            return found if found is not None else self.put(key, make())

    def values(self) -> list[V]:
        """The values, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _trim(self) -> None:
        droppable = [k for k in self._entries if self._evictable is None or self._evictable(k)]
        for key in droppable[: max(0, len(droppable) - self.limit)]:
            del self._entries[key]  # whoever still holds the value keeps it alive until they let go
