"""A per-call shell of a shared model: its own module tree, the original's parameters and buffers.

The engines hold one model per architecture, shared by every user and thread, and never
change it. A method that must hook a module (Guided Grad-CAM hooks every ReLU), switch a
flag (``set_inplace``, ``eval``, a detector's score cut) or swap a child (a backbone that
records its stages, a transform of another size) does it on a :func:`shell` instead:

* every module of the tree is copied, shallowly, with its own containers: its child,
  parameter and buffer tables, its hook tables, its plain attributes. A hook, a flag or a
  child set on any module of the shell therefore stays on the shell;
* the parameters and buffers are the original's tensors themselves (the same storage): a
  shell costs no memory per weight, and a forward through it computes what the original
  computes.

What a shell cannot protect: the shared tensors themselves. Writing into a weight, or
``requires_grad_`` on one, changes the original's too. And a shell of a shell copies the
first one's replacements as well: a module that records what it sees (a tap) must go into
the last shell made, or the forward records into a copy of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from torch import nn

__all__ = ["shell"]

M = TypeVar("M", bound=nn.Module)

# The containers a module keeps in its __dict__ (child, parameter, buffer and hook tables, and any
# list, dict or set of its own): a shell gets copies, so that registering on it leaves the original alone.
_CONTAINERS = (dict, list, set)


def shell(model: M, *, replace: Mapping[str, nn.Module] | None = None) -> M:
    """A copy of ``model``'s module tree sharing every parameter and buffer, with children replaced.

    ``replace`` maps a submodule's dotted name (``"transform"``, ``"backbone.body"``,
    ``"layer1.0"``) to the module to put there; that module is used as given, not copied,
    so the caller keeps its handle on it. Hooks already on the original are kept on the
    shell (in its own tables); hooks, flags and children set later on either side stay
    there. Cost: one shallow copy per module (a few milliseconds for a detector).
    Raises ValueError for a name that is not a submodule of ``model``.
    """
    swaps = dict(replace or {})
    for path in swaps:
        if not path or _missing(model, path):
            raise ValueError(f"{type(model).__name__} has no submodule {path!r} to replace.")
    return _copied(model, "", swaps, {})


def _missing(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return True
    return False


def _copied(module: M, path: str, swaps: dict[str, nn.Module], memo: dict[int, nn.Module]) -> M:
    """``module`` copied with its subtree; ``memo`` keeps a module that sits twice in the tree one module."""
    if id(module) in memo:
        return memo[id(module)]  # type: ignore[return-value]
    # What copy.copy does, without its generic (and, over a detector's 300 modules, slow) protocol:
    # a new object whose __dict__ holds the same values, each container a copy with the same entries.
    out = object.__new__(type(module))
    out.__dict__.update({k: v.copy() if isinstance(v, _CONTAINERS) else v for k, v in vars(module).items()})
    memo[id(module)] = out
    for name, child in module._modules.items():
        child_path = f"{path}.{name}" if path else name
        if child_path in swaps:
            out._modules[name] = swaps[child_path]
        elif child is not None:
            out._modules[name] = _copied(child, child_path, swaps, memo)
    return out
