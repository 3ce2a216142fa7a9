"""The one exception type for mistakes a user can make (bad file, bad weights, bad option).

The CLI prints its message as one line and exits non-zero; the app shows it as a
``gr.Error``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InvalidValue", "UserError"]


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and what to do."""


class InvalidValue(UserError, ValueError):
    """A number out of its range (an opacity above 1): a sentence for the user, and still the
    ``ValueError`` that code calling the function directly expects."""
