"""Fitting a state_dict to a model strictly: what keeps it from fitting, in words short enough for
one sentence, and the one strict load every weights file goes through.

Strict means every key and every shape: the only thing filled in is BatchNorm's count of
training batches (``num_batches_tracked``), which torch's own loading fills too when a file
lacks it, and which changes no output in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import WeightsError

__all__ = ["load_strict", "state_dict_fit_problem", "with_batch_counts"]


def state_dict_fit_problem(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state_dict`` from loading strictly into ``model``, or None when it fits.

    One clause per kind of mismatch (missing, unexpected, wrongly shaped keys), each naming
    its first three keys, e.g. ``"1 missing (fc.bias); 1 of the wrong shape (fc.weight [10, 2048]
    where [1000, 2048] is needed)"``: short enough for a one-sentence error.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {list(v.shape)} where {list(expected[k].shape)} is needed"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    parts = [
        f"{len(keys)} {what} ({', '.join(k[:80] for k in keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", shapes))
        if keys
    ]
    return "; ".join(parts) or None


def with_batch_counts(*, model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with each BatchNorm ``num_batches_tracked`` it lacks taken from ``model``, as torch's
    own loading fills them in a state_dict saved without them (safetensors exports often are).

    Only those buffers: the count of batches seen in training changes no output in eval mode,
    and every other missing key still fails the strict load."""
    missing = {
        k: v.clone() for k, v in model.state_dict().items() if k.endswith("num_batches_tracked") and k not in state_dict
    }
    return {**state_dict, **missing} if missing else state_dict


def load_strict(
    *, model: nn.Module, state_dict: dict[str, torch.Tensor], name: str, arch: str, cli_fix: str = ""
) -> None:
    """Load every key of ``state_dict`` into ``model``, or say (naming the file ``name``) why it does not fit."""
    state_dict = with_batch_counts(model=model, state_dict=state_dict)
    problem = state_dict_fit_problem(model, state_dict)
    if problem is not None:
        raise WeightsError(
            f"{name} does not fit {arch} (wrong key names or shapes: {problem}); "
            f"it must hold the weights of a torchvision-compatible {arch}.",
            cli_fix=cli_fix,
        )
    model.load_state_dict(state_dict, strict=True)
