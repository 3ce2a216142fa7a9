"""Class names: finding a class by index or (part of) its name, and naming an index.

A query is user input (``--target``, the app's class box) and names come from checkpoints:
both are compared after Unicode normalisation (NFC, case folded), and only ASCII digits
make an index, so "²" or "٣" are looked up as names, never passed to ``int()``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from ..core.errors import UserError

__all__ = ["CLOSE_MATCHES", "class_label", "close_classes", "find_class", "resolve_class"]


def class_label(categories: Sequence[str], index: int) -> str:
    """The name of class ``index``, or "class N" where the weights name no such class."""
    return categories[index] if 0 <= index < len(categories) else f"class {index}"


CLOSE_MATCHES = 3  # classes an unknown name suggests
_MAX_CLOSE_QUERY = 100  # characters compared: no class name is longer, and the comparison grows with both
_INDEX = re.compile(r"[0-9]{1,9}")  # ASCII only: str.isdigit() is also true for "²", which int() refuses


def _normal(text: str) -> str:
    """``text`` for comparing: composed (NFC), case folded, inner whitespace single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _index(query: str) -> int | None:
    """The class index ``query`` spells in ASCII digits, or None."""
    q = query.strip()
    return int(q) if _INDEX.fullmatch(q) else None


def find_class(*, categories: Sequence[str], query: str) -> list[int]:
    """Indices of classes matching ``query``: an index, then exact names, then prefixes, then substrings.

    Case-insensitive (Unicode case folding); the order is best match first.
    """
    q = _normal(query)
    if not q:
        return []
    names = [_normal(c) for c in categories]
    found: dict[int, None] = {}
    index = _index(query)
    if index is not None and index < len(categories):
        found[index] = None
    for test in (
        lambda n: n == q,
        lambda n: n.startswith(q) or any(w.startswith(q) for w in n.replace("-", " ").split()),
        lambda n: q in n,
    ):
        for i, n in enumerate(names):
            if test(n):
                found.setdefault(i, None)
    return list(found)


def close_classes(*, categories: Sequence[str], query: str, limit: int = CLOSE_MATCHES) -> list[int]:
    """Indices of at most ``limit`` classes whose names are spelled closest to ``query`` (a typo's
    likely meaning), best first; none when nothing is close."""
    q = _normal(query[:_MAX_CLOSE_QUERY])
    names = [_normal(c) for c in categories]
    # Whole names and their words: "tabbby" is close to "tabby cat" through its first word.
    candidates: dict[str, int] = {}
    for i, n in enumerate(names):
        for key in (n, *n.replace("-", " ").split()):
            candidates.setdefault(key, i)
    found: dict[int, None] = {}
    for key in difflib.get_close_matches(q, list(candidates), n=4 * limit, cutoff=0.75):
        found.setdefault(candidates[key], None)
    return list(found)[:limit]


def _or(indices: Sequence[int], categories: Sequence[str]) -> str:
    shown = [f"{i} ({categories[i]})" for i in indices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def resolve_class(*, categories: Sequence[str], query: str | int) -> int:
    """One class from an index or a name; raises :class:`UserError` when none or several fit."""
    if isinstance(query, (int, np.integer)):
        if 0 <= int(query) < len(categories):
            return int(query)
        raise UserError(f"Class {query} does not exist: this model has classes 0 to {len(categories) - 1}.")
    matches = find_class(categories=categories, query=query)
    exact = [i for i in matches if _normal(categories[i]) == _normal(query)]
    index = _index(query)
    if index is not None and matches and matches[0] == index:
        return index
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches and index is not None:
        raise UserError(f"Class {index} does not exist: this model has classes 0 to {len(categories) - 1}.")
    if not matches:
        close = close_classes(categories=categories, query=query)
        # A few near spellings, never the whole list: a model may have a thousand classes.
        hint = f" Did you mean {_or(close, categories)}?" if close else ""
        raise UserError(f"No class matches {query[:80]!r}.{hint} Give a class index or part of a class name.")
    shown = ", ".join(f"{i} ({categories[i]})" for i in (exact or matches)[:10])
    raise UserError(f"{query[:80]!r} matches several classes: {shown}. Give the class index.")
