"""The model's code as the app shows it beside the diagram."""

from __future__ import annotations

import inspect

from ..core import model as model_module

# What the app shows, in the module's own order.
_SOURCE_OBJECTS = ("conv3x3", "conv1x1", "Bottleneck", "ResNet")


def model_source() -> str:
    """The source of ``conv3x3``, ``conv1x1``, ``Bottleneck`` and ``ResNet``, read from
    :mod:`resnet_demo.core.model` with :mod:`inspect`, so it is always the code that runs."""
    return "\n\n".join(inspect.getsource(getattr(model_module, name)).rstrip("\n") + "\n" for name in _SOURCE_OBJECTS)
