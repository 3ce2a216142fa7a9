"""The gradients the CAM family weighs, from at most one backward pass, and the finished layer map.

Grad-CAM (Selvaraju et al., 2017) and its relatives (:mod:`.cams`) are formulas on a
stage's output A and the gradient of the class score at it, d y / d A. This module
computes those gradients from the analysis's stored pass, never from a new forward:

* At ``layer4`` no backward pass is needed at all. After ``layer4`` come a global
  average pool and the ``fc`` layer, so d logit_c / d A_k(i, j) = w_ck / (H W) at
  every position: the gradient is a closed form (with ``versus``: (w_A - w_B) / (H W)).
* At an earlier stage, only the network *after* that stage is rerun, from the stored
  activation, and one backward pass down to it yields the gradients of that stage and
  of every later one: walking the stages one by one costs one backward in all.

:class:`GradientCache` keeps the gradients per (class, contrast class), bounded, so
that another method or stage on the same analysis costs only its arithmetic.
The explained score is logit(target), or logit(target) - logit(versus) for a
contrastive map ("why A and not B").

Every map of the CAM family is finished by :func:`finish_layer_map`, i.e. by
:func:`resnet_demo.core.cam.finish_cam`, as the Transfer tab's Grad-CAM is: upsampled
bilinearly to the crop, as the Grad-CAM paper does, then scaled to [0, 1]; a map without
positive evidence stays all zeros.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..core.cam import finish_cam
from ..core.model import STAGES, ResNet
from .network import POSITION
from .results import FinishedMap

__all__ = [
    "GRADIENT_CACHE", "GradientCache", "finish_layer_map", "grad_segment", "layer4_gradient", "score_of",
    "segment_backward", "segment_forward",
]  # fmt: skip

# (target, versus) pairs whose gradients an analysis keeps: those of every stage from the stem
# down take 6.4 MB for ResNet-50 at 224 px; the least recently used pair goes first.
GRADIENT_CACHE = 3


def score_of(logits: Tensor, target: int, versus: int | None) -> Tensor:
    """The explained score of each row of (B, classes) ``logits``: logit(target), or
    logit(target) - logit(versus) when ``versus`` is a class. (B,)"""
    score = logits[:, target]
    return score if versus is None else score - logits[:, versus]


def layer4_gradient(model: ResNet, layer4: Tensor, *, target: int, versus: int | None) -> Tensor:
    """d score / d layer4 without a backward pass: (w_target - w_versus) / (H W) at every position.

    A broadcast view of one (C,) vector: (1, C, h, w), no memory per position.
    """
    h, w = layer4.shape[-2:]
    weight = model.fc.weight[target]  # (C,)
    if versus is not None:
        weight = weight - model.fc.weight[versus]
    return (weight.detach() / (h * w)).to(layer4.dtype).view(1, -1, 1, 1).expand_as(layer4)


def segment_forward(
    model: ResNet, act: Tensor, *, start: str, stats: list[Tensor] | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The network from ``start``'s activation on, recording autograd (float32): the logits and the
    activations of ``start`` and every later stage, still attached to the graph."""
    leaf = act.detach().clone().requires_grad_(True)  # a normal tensor even if ``act`` is an inference tensor
    with torch.enable_grad(), torch.autocast(device_type=leaf.device.type, enabled=False):
        logits, acts = model.forward_stages(leaf, start=start, stats=stats)
    assert logits is not None
    return logits, acts


def segment_backward(
    model: ResNet, logits: Tensor, acts: dict[str, Tensor], *, stages: Sequence[str], target: int, versus: int | None
) -> dict[str, Tensor]:
    """ONE backward of :func:`segment_forward`'s graph: the gradients of the score at ``stages``
    (``layer4``'s in closed form), detached. The graph is freed."""
    wanted = [s for s in stages if s != "layer4"]
    with torch.enable_grad():
        score = score_of(logits, target, versus)[0]
        grads = torch.autograd.grad(score, [acts[s] for s in wanted]) if wanted else ()
    found = dict(zip(wanted, grads, strict=True))
    if "layer4" in stages:  # cheaper than autograd, and the same number (see the module docstring)
        found["layer4"] = layer4_gradient(model, acts["layer4"].detach(), target=target, versus=versus)
    return found


def grad_segment(
    model: ResNet,
    act: Tensor,
    *,
    start: str,
    stages: Sequence[str],
    target: int | None,
    versus: int | None = None,
    stats: list[Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], int]:
    """Forward from ``start``'s activation with autograd, then ONE backward down to the
    earliest of ``stages`` (all at or after ``start``).

    Returns the logits, the activations of ``start`` and every later stage, the
    gradients of the score at ``stages`` (``layer4``'s in closed form), and the target
    (the top-1 class if ``target`` is None). Everything returned is detached.
    """
    logits, acts = segment_forward(model, act, start=start, stats=stats)
    if target is None:
        target = int(logits[0].argmax())
    found = segment_backward(model, logits, acts, stages=stages, target=target, versus=versus)
    return logits.detach(), {k: v.detach() for k, v in acts.items()}, found, target


class GradientCache:
    """The gradients of one analysis's class scores at its stages, per (target, versus), bounded.

    A request for stages not held reruns the network from the earliest of them (from
    the stored activation) and one backward fills in that stage and every later one.
    Safe to use from several threads: two threads asking the same thing at once may
    both compute it (the results are equal), the first result is kept.
    """

    def __init__(
        self,
        *,
        model: ResNet,
        activations: Mapping[str, Tensor],
        limit: int = GRADIENT_CACHE,
        rerun_from: str | None = None,
    ) -> None:
        """``rerun_from``: the stage every rerun starts from (None: the earliest one asked); an
        analysis whose later activations were rounded (bfloat16) reruns from its float32 stem,
        and the rerun's float32 activations are kept in :attr:`exact_activations` for the maps."""
        self._model = model
        self._rerun_from = rerun_from
        self.exact_activations: dict[str, Tensor] = {}
        self._acts = activations  # stage -> (1, C, h, w) from the analysis's pass
        self._limit = limit
        self._lock = threading.Lock()
        self._held: dict[tuple[int, int | None], dict[str, Tensor]] = {}
        # A backward whose graph the pass kept (analyze(defer_backward=True)): run once, when first needed.
        self._later: dict[tuple[int, int | None], Callable[[], dict[str, Tensor]]] = {}
        self._later_lock = threading.Lock()

    def seed(self, *, target: int, versus: int | None, gradients: Mapping[str, Tensor]) -> None:
        """Keep gradients computed elsewhere (:func:`~resnet_demo.explain.analyze`'s one pass)."""
        self._merge((target, versus), {s: g for s, g in gradients.items() if s != "layer4"})

    def seed_later(self, *, target: int, versus: int | None, backward: Callable[[], dict[str, Tensor]]) -> None:
        """Keep a backward not yet run (its graph is held until then): :meth:`get` runs it once, first."""
        self._later[(target, versus)] = backward

    def _run_later(self, key: tuple[int, int | None]) -> None:
        with self._later_lock:  # a second thread waits for the first's backward: a graph runs once
            backward = self._later.pop(key, None)
            if backward is not None:
                self.seed(target=key[0], versus=key[1], gradients=backward())

    def get(self, stages: Sequence[str], *, target: int, versus: int | None) -> dict[str, Tensor]:
        """Stage -> d score / d A, (1, C, h, w), for every stage in ``stages``."""
        key = (target, versus)
        deep = [s for s in stages if s != "layer4"]
        if deep and key in self._later:
            self._run_later(key)
        with self._lock:
            held = self._held.pop(key, {})
            self._held[key] = held  # most recently used last
        missing = [s for s in deep if s not in held]
        if missing:
            start = self._rerun_from or min(missing, key=POSITION.__getitem__)
            # The backward passes every later stage on its way down: their gradients are free.
            on_the_way = [s for s in STAGES if POSITION[s] >= POSITION[start] and s != "layer4"]
            _, acts, got, _ = grad_segment(
                self._model, self._acts[start], start=start, stages=on_the_way, target=target, versus=versus
            )
            if self._rerun_from is not None:
                self.exact_activations.update(acts)  # one dict update: atomic for concurrent readers
            held = self._merge(key, got)
        found = {s: held[s] for s in deep}
        if "layer4" in stages:
            found["layer4"] = layer4_gradient(self._model, self._acts["layer4"], target=target, versus=versus)
        return found

    def _merge(self, key: tuple[int, int | None], gradients: Mapping[str, Tensor]) -> dict[str, Tensor]:
        with self._lock:
            merged = {**gradients, **self._held.pop(key, {})}  # keep what is held: callers may hold it
            self._held[key] = merged
            while len(self._held) > self._limit:
                self._held.pop(next(iter(self._held)))
            return merged


def finish_layer_map(raw: Tensor, size: tuple[int, int]) -> FinishedMap:
    """Upsample a (1, 1, h, w) map bilinearly to ``size`` and scale it to [0, 1], NaN-free: the registry's
    ``finish`` for layer maps, :func:`~resnet_demo.core.cam.finish_cam` (the Transfer tab's too)."""
    return finish_cam(cam=raw, size=size)
