"""The server's time limit per request: work expected to take longer is refused up front, with
the reason, before it holds a queue that other visitors wait in.

The expectation is the explanation engine's (:func:`resnet_demo.explain.method_cost`, the trust
checks' :func:`.trust_handlers.expected_seconds`): measured costs times this machine's speed. The
limit is :data:`.settings.TIME_BUDGET_S` unless ``python app.py --time-budget S`` sets it (0: none,
for a private run).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..explain import check_budget
from .settings import TIME_BUDGET_S

__all__ = ["BUDGET", "within_budget"]


@dataclass
class Budget:
    """The limit in force: set once at start-up (``build_demo``), read by every request."""

    seconds: float  # 0: no limit


BUDGET = Budget(seconds=TIME_BUDGET_S)


def within_budget(*, seconds: float, what: str) -> None:
    """Refuse (a :class:`~resnet_demo.core.errors.UserError`) ``what`` if its expected ``seconds`` exceed the limit."""
    check_budget(seconds=seconds, budget_s=BUDGET.seconds, what=what)
