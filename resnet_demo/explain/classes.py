"""Class names: finding a class by index or (part of) its name, and naming an index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError

__all__ = ["class_label", "find_class", "resolve_class"]


def class_label(categories: Sequence[str], index: int) -> str:
    """The name of class ``index``, or "class N" where the weights name no such class."""
    return categories[index] if 0 <= index < len(categories) else f"class {index}"


def find_class(*, categories: Sequence[str], query: str) -> list[int]:
    """Indices of classes matching ``query``: an index, then exact names, then prefixes, then substrings.

    Case-insensitive; the order is best match first.
    """
    q = " ".join(query.strip().lower().split())
    if not q:
        return []
    names = [c.lower() for c in categories]
    found: dict[int, None] = {}
    if q.isdigit() and int(q) < len(categories):
        found[int(q)] = None
    for test in (
        lambda n: n == q,
        lambda n: n.startswith(q) or any(w.startswith(q) for w in n.replace("-", " ").split()),
        lambda n: q in n,
    ):
        for i, n in enumerate(names):
            if test(n):
                found.setdefault(i, None)
    return list(found)


def resolve_class(*, categories: Sequence[str], query: str | int) -> int:
    """One class from an index or a name; raises :class:`UserError` when none or several fit."""
    if isinstance(query, (int, np.integer)):
        if 0 <= int(query) < len(categories):
            return int(query)
        raise UserError(f"Class {query} does not exist: this model has classes 0 to {len(categories) - 1}.")
    matches = find_class(categories=categories, query=query)
    exact = [i for i in matches if categories[i].lower() == " ".join(query.strip().lower().split())]
    if query.strip().isdigit() and matches and matches[0] == int(query.strip()):
        return matches[0]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"No class matches {query!r}. Give a class index or part of a class name.")
    shown = ", ".join(f"{i} ({categories[i]})" for i in (exact or matches)[:10])
    raise UserError(f"{query!r} matches several classes: {shown}. Give the class index.")
