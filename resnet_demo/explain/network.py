"""The network the engine runs: a cached inference copy of a shared model, and its inference pass.

The copy has BatchNorm folded into the convolutions and is laid out ``channels_last``
(see :mod:`resnet_demo.core.fold`); it is made once per model and format (float32, and
bfloat16 when a precision asks for it: see :mod:`resnet_demo.core.precision`) and shared
read-only, like the model. Every pass goes through the model's own forward (:meth:`ResNet.forward_stages`),
so there is one definition of a block for training, inference and attribution.
"""

from __future__ import annotations

import copy
import functools
import itertools
import threading
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core.fold import inference_copy
from ..core.model import STAGES, ResNet

__all__ = ["POSITION", "device_of", "dtype_of", "inference_model", "inference_pass", "input_of"]

# Order of the points a pass can start from: the input, then every stage.
POSITION = {name: i for i, name in enumerate(("input", *STAGES))}

# One inference copy per shared model and format (two at most), made on first use. Keyed weakly,
# so a model that is dropped takes its copies along; the fingerprint notices a model updated in place.
_FAST: weakref.WeakKeyDictionary[ResNet, tuple[tuple[int, ...], dict[torch.dtype, ResNet]]] = (
    weakref.WeakKeyDictionary()
)
_FAST_LOCK = threading.Lock()

_Pass = Callable[[Tensor], tuple[Tensor, dict[str, Tensor], Tensor]]
_COMPILED: weakref.WeakKeyDictionary[ResNet, _Pass] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple[int, ...]:
    return tuple(t._version for t in itertools.chain(model.parameters(), model.buffers()))


def inference_model(model: ResNet, *, dtype: torch.dtype = torch.float32) -> ResNet:
    """The folded, ``channels_last`` inference copy of ``model`` in ``dtype`` (see :mod:`resnet_demo.core.fold`), cached.

    ``model`` itself is only read. The copy is shared read-only like the model. A bfloat16
    copy takes bfloat16 input (:func:`input_of` casts) and is for the forward only: the
    engine takes every gradient in float32 (see :mod:`resnet_demo.core.precision`).
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"inference copies are float32 or bfloat16, not {dtype}")
    fingerprint = _fingerprint(model)
    with _FAST_LOCK:
        hit = _FAST.get(model)
        if hit is None or hit[0] != fingerprint:
            hit = (fingerprint, {})
            _FAST[model] = hit
        copies = hit[1]
        if torch.float32 not in copies:
            copies[torch.float32] = inference_copy(model)
        if dtype not in copies:
            # Folding happens once, in float32: the bfloat16 copy is that copy cast (a bfloat16 pass
            # needs the float32 copy too, for its stem and head).
            copies[dtype] = copy.deepcopy(copies[torch.float32]).to(dtype=dtype)
        return copies[dtype]


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def dtype_of(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def input_of(model: ResNet, tensor: Tensor) -> Tensor:
    """A preprocessed (1, 3, H, W) image as ``model`` takes it: on its device, in its format, ``channels_last``."""
    return tensor.to(device_of(model), dtype_of(model)).contiguous(memory_format=torch.channels_last)


def _infer(model: ResNet, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The inference pass (call under inference mode): logits, stage outputs, and the
    statistics of every block as a (blocks, 3) tensor. What ``compile=True`` compiles."""
    stats: list[Tensor] = []
    logits, acts = model.forward_stages(x, stats=stats)
    assert logits is not None
    return logits, acts, torch.stack(stats).view(-1, 3)


def inference_pass(model: ResNet, x: Tensor, *, compile: bool) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """:func:`_infer`, or its ``torch.compile`` version (opt-in: a minute of compiling on first use)."""
    if not compile:
        return _infer(model, x)
    with _FAST_LOCK:
        fn = _COMPILED.get(model)
        if fn is None:
            # freezing: weights become constants, so inductor can pre-pack them for oneDNN.
            fn = torch.compile(functools.partial(_infer, model), dynamic=False, options={"freezing": True})
            _COMPILED[model] = fn
    return fn(x)
