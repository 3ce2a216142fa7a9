"""Class names read from files (a checkpoint's metadata, a dataset's folder names), made fit to show.

Menus, labels and messages show these names beside the app's own text. A bidirectional control
character in one (U+202E, the right-to-left override, say) reorders what follows it when it is
displayed: the name, and the rest of the sentence around it, would read reversed. They are
removed here, once, wherever a name comes in from a file.
"""

from __future__ import annotations

__all__ = ["BIDI_CONTROLS", "clean_class_name"]

# The embeddings and overrides (U+202A..U+202E), the isolates (U+2066..U+2069), the left-to-right
# and right-to-left marks, and the Arabic letter mark.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_REMOVE = dict.fromkeys(map(ord, BIDI_CONTROLS))


def clean_class_name(name: str) -> str:
    """``name`` without its bidirectional control characters (:data:`BIDI_CONTROLS`)."""
    return name.translate(_REMOVE)
