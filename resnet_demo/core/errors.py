"""The one exception type for mistakes a user can make (bad file, bad weights, bad option),
and its kinds.

The CLI prints its message as one line and exits non-zero; the app shows it as a
``gr.Error``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InvalidValue", "UserError", "WeightsError", "damaged_file"]


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and what to do."""


class InvalidValue(UserError, ValueError):
    """A number out of its range (an opacity above 1): a sentence for the user, and still the
    ``ValueError`` that code calling the function directly expects."""


class WeightsError(UserError):
    """Weights could not be had. The message names the file, the cause and the fix.

    ``problem`` says what is wrong in words fit for anyone; ``cli_fix``, when set, is the
    command-line remedy (flags, the cache path on this machine) that ``str()`` appends.
    The app shows ``problem`` with its own remedy instead.
    """

    def __init__(self, problem: str, *, cli_fix: str = "") -> None:
        super().__init__(f"{problem} {cli_fix}".rstrip())
        self.problem = problem
        self.cli_fix = cli_fix


def damaged_file(name: str, *, kind: str, why: str) -> WeightsError:
    """The one sentence for a weights file that is the right kind but broken: ``name`` is a damaged
    ``kind`` (``why``), and what to do about it."""
    return WeightsError(f"{name} is a damaged {kind} ({why}): it may be incomplete, so save or download it again.")
