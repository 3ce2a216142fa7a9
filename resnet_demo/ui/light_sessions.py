"""Gradio's record of a session, made without a copy of every component's settings.

Gradio makes a ``SessionState`` for every session: each page, each ``gradio_client``, and each
call of the plain HTTP API (``/call/...``, curl), which gets a session of its own. Its
constructor copies the configuration of every block of the app up front (``config_values``),
which Gradio reads only to save a deep link (``/gradio_api/deep_link``) and otherwise fills
entry by entry as a component's value or settings change. For this app's 242 blocks the copy
took 14 ms of the server's event loop per session (half of it ``inspect.signature`` of each
block's class) and kept about 0.4 MB per session. Under 16 script clients that was a
third of the event loop's work per ``/explain`` call, and the loop shares the cores with the
model.

:func:`install` makes later sessions start with that copy empty. Gradio's own constructor still
makes them, so any field a later Gradio adds is set as before. What changes: a deep link saves
the components whose value or settings changed in the session, not every component; a
component left as it was loads as it is anyway. The app has no deep-link button.
"""

from __future__ import annotations

from typing import Any

from gradio.state_holder import SessionState

__all__ = ["install", "installed"]

_GRADIO_INIT = SessionState.__init__


class _NoBlocksCopied:
    """What ``SessionState.__init__`` reads of the app: its default configuration, and no block to copy."""

    blocks: dict[int, Any] = {}  # noqa: RUF012  (read only, never filled)

    def __init__(self, app: Any) -> None:
        self.default_config = app.default_config


def _light_init(self: SessionState, blocks: Any) -> None:
    _GRADIO_INIT(self, _NoBlocksCopied(blocks))


def install() -> None:
    """Make every Gradio session made from now on in this process start without the copy; idempotent."""
    SessionState.__init__ = _light_init  # type: ignore[method-assign]


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return SessionState.__init__ is _light_init
