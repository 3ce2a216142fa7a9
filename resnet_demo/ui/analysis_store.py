"""The server's store of per-user analyses: bounded in count and bytes, idle entries swept.

Gradio keeps ``gr.State`` values of a closed browser tab for an hour, whatever the
state's ``time_to_live`` says. So the tabs keep only a short key in ``gr.State`` and the
:class:`~resnet_demo.explain.Analysis` itself lives here: dropped when its visitor leaves
(``demo.unload``), after :attr:`AnalysisStore.ttl_s` idle, when the store is full (oldest
first), and when the checkpoint model it ran has left the shared cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..core.errors import UserError
from ..core.weights import NAMED_WEIGHTS, LoadedModel, shared_models
from ..explain import Analysis, Prepared, analyze
from .messages import EXPIRED, NO_PHOTO
from .settings import STATE_TTL_S

# The display copy of each photo: enough for the "whole photo" view at any screen size.
DISPLAY_MAX = 1024
MAX_ENTRIES = 256
MAX_BYTES = 1024**3  # 1 GiB of analyses (about 15 MB each while in use) and the checkpoint models they pin
PER_SESSION = 2  # a visitor's newest analyses: a view of the previous photo may still be in flight
# Idle this long, an entry keeps only the prepared photo (about 1 MB, the display copy included)
# and drops the analysis (8 MB of stage outputs, as much again in gradients and maps): the
# visitor's next view runs the forward pass again (40 ms on the 2-core EPYC), then its maps.
HOT_S = 60.0


@dataclass
class _Entry:
    """One visitor's photo: its analysis while in use, only what reruns it once idle (see HOT_S)."""

    prepared: Prepared  # the photo as the model takes it, the crop and the display copy
    loaded: LoadedModel
    topk: int
    session: str
    analysis: Analysis | None  # None once idle: the next use runs the forward pass again
    used: float = field(default_factory=time.monotonic)

    def nbytes(self) -> int:
        """About what it holds: the prepared photo; an analysis adds its stage outputs and as
        much again in gradients and maps once the views have been drawn."""
        tensor = self.prepared.tensor.numel() * self.prepared.tensor.element_size()
        images = 3 * sum(w * h for w, h in (self.prepared.image.size, self.prepared.crop.size))
        if self.analysis is None:
            return tensor + images
        acts = sum(c * h * w for c, h, w in self.analysis.stage_shapes.values()) * 4  # float32
        return tensor + images + 2 * acts


def _model_bytes(loaded: LoadedModel) -> int:
    """The model and its folded inference copy (same sizes): what an entry pins when nothing else does."""
    return 2 * sum(p.numel() * p.element_size() for p in loaded.model.parameters())


def _from_file(loaded: LoadedModel) -> bool:
    return loaded.spec.name not in NAMED_WEIGHTS


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once per process
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def give_back_memory() -> None:
    """Collect cycles and hand freed heap pages back to the system (glibc keeps them otherwise),
    so that the process's memory really falls when visitors leave."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)


class AnalysisStore:
    """Analyses by key, least recently used first; thread-safe.

    ``ttl_s``: idle seconds before an entry goes; ``hot_s``: idle seconds before it drops its
    computed maps; ``max_entries``/``max_bytes``: the bounds (a checkpoint model an entry pins
    counts once towards the bytes); ``per_session``: the newest analyses kept per visitor.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        hot_s: float = HOT_S,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        per_session: int = PER_SESSION,
    ) -> None:
        self.ttl_s = ttl_s
        self.hot_s = hot_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.per_session = per_session
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, analysis: Analysis, *, session: str) -> str:
        """Keep ``analysis`` for ``session``; returns its key (what ``gr.State`` holds)."""
        key = f"{session[:16]}-{secrets.token_urlsafe(9)}"
        entry = _Entry(analysis.prepared, analysis.loaded, len(analysis.predictions), session, analysis)
        with self._lock:
            self._entries[key] = entry
            mine = [k for k, e in self._entries.items() if e.session == session]
            for old in mine[: max(0, len(mine) - self.per_session)]:
                del self._entries[old]
        self.sweep(models=False)  # checking the model cache could wait on a model being loaded
        return key

    def get(self, key: str) -> Analysis | None:
        """The analysis under ``key``, marked as used; None when it has gone (or never was).

        An idle entry's analysis is made again first: one forward pass of the prepared photo,
        the same numbers as before.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry.used > self.ttl_s:
                return None
            entry.used = time.monotonic()
            self._entries.move_to_end(key)
            found = entry.analysis
        if found is None:
            found = analyze(image=entry.prepared, model=entry.loaded, topk=entry.topk)
            with self._lock:
                entry.analysis = entry.analysis or found  # two at once: the first one made stays
                found = entry.analysis
        return found

    def drop_session(self, session: str) -> int:
        """Forget every analysis of ``session`` (its visitor left); returns how many."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.session == session]
            for k in keys:
                del self._entries[k]
        if keys:
            give_back_memory()
        return len(keys)

    def sweep(self, *, models: bool = True) -> int:
        """Drop idle entries, entries whose checkpoint model left the shared cache (with ``models``),
        then the least recently used ones beyond the bounds. Entries idle for ``hot_s`` keep only
        their prepared photo. Returns how many entries went or were so reduced."""
        shared = {id(m) for m in shared_models()} if models else None
        now = time.monotonic()
        with self._lock:
            orphaned = {k for k, e in self._entries.items() if shared is not None and _from_file(e.loaded)
                        and id(e.loaded) not in shared}  # fmt: skip
            stale = [k for k, e in self._entries.items() if now - e.used > self.ttl_s or k in orphaned]
            for k in stale:
                del self._entries[k]
            dropped = len(stale)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes() > self.max_bytes):
                self._entries.popitem(last=False)
                dropped += 1
            for e in self._entries.values():
                if e.analysis is not None and now - e.used > self.hot_s:
                    e.analysis = None  # its stage outputs, gradients and maps: made again when used
                    dropped += 1
        return dropped

    def nbytes(self) -> int:
        """About what the entries hold, plus the checkpoint models they pin."""
        with self._lock:
            return self._bytes()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def sessions(self) -> set[str]:
        """The sessions that have analyses here."""
        with self._lock:
            return {e.session for e in self._entries.values()}

    def prepared(self) -> list[Prepared]:
        """Every photo kept, least recently used first."""
        with self._lock:
            return [e.prepared for e in self._entries.values()]

    def models(self) -> list[LoadedModel]:
        """The model of every photo kept, least recently used first."""
        with self._lock:
            return [e.loaded for e in self._entries.values()]

    def _bytes(self) -> int:  # call with the lock held
        models = {id(e.loaded): e.loaded for e in self._entries.values() if _from_file(e.loaded)}
        return sum(e.nbytes() for e in self._entries.values()) + sum(_model_bytes(m) for m in models.values())


# The app's one store, shared by every session of this server process.
ANALYSES = AnalysisStore(ttl_s=STATE_TTL_S)


def stored(value: Analysis | str | None) -> Analysis:
    """The analysis a tab's state names (a store key, or an analysis itself), or a :class:`UserError`
    saying why there is none: no photo yet, or its analysis has expired."""
    found = stored_or_none(value)
    if found is None:
        raise UserError(NO_PHOTO if value is None else EXPIRED)
    return found


def stored_or_none(value: Analysis | str | None) -> Analysis | None:
    """Like :func:`stored`, with None for no photo or an expired one (views that simply stay as they are)."""
    if value is None or isinstance(value, Analysis):
        return value
    return ANALYSES.get(str(value))
