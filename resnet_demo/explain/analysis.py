"""class :class:`Analysis`: what one forward pass of one image computed, and everything derived from it.

Predictions, stage outputs and block statistics come from the pass itself; feature
maps and explanation maps are computed on request from the stored stage outputs,
through the method registry (:mod:`.methods`), and cached per analysis. An analysis
never changes after it is made, so it may be kept per user (``gr.State``) and used
from several threads at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import UserError
from ..images import CropBox
from ..model import STAGES, ResNet
from ..render import grid, overlay_box
from ..weights import LoadedModel, WeightsSpec
from .classes import class_label
from .methods import MethodCall, get_method, method_options
from .network import check_stage
from .results import Attribution, BlockStat, FeatureGrid, Prediction, Prepared, top_predictions

__all__ = ["Analysis", "overlay_on_full"]

# Finished maps kept per analysis (224x224 float32 each: 200 kB); the oldest go first.
_CACHE_MAPS = 48
# Raw maps a method computed without being asked (Grad-CAM's stages on the way down): small.
_CACHE_RAW = 5 * _CACHE_MAPS


def _remember(cache: dict[Any, Any], key: Any, value: Any, *, limit: int) -> Any:
    """Store ``value`` unless ``key`` is there already; forget the oldest entries past ``limit``.

    Returns what the cache holds for ``key``. Call with the owner's lock held.
    """
    value = cache.setdefault(key, value)
    while len(cache) > limit:
        cache.pop(next(iter(cache)))
    return value


class Analysis:
    """What one forward pass of one image computed, and everything derived from it.

    Read-only from outside: every list or dict property returns a fresh copy.
    Attributions are computed on demand and cached; several threads may call any
    method at once (results are identical to sequential calls).
    """

    def __init__(
        self,
        *,
        loaded: LoadedModel,
        model: ResNet,
        prepared: Prepared,
        logits: Tensor,
        acts: dict[str, Tensor],
        blocks: list[BlockStat],
        topk: int,
        timings: dict[str, float],
        maps: dict[str, Tensor] | None = None,
        maps_target: int | None = None,
        started: float | None = None,
    ) -> None:
        """``maps`` are raw Grad-CAM maps of class ``maps_target`` computed with the pass;
        ``started`` is the ``time.perf_counter()`` at which the work began: ``timings``
        then gains "total", measured up to the end of this constructor."""
        self._loaded = loaded
        self._model = model
        self._prepared = prepared
        self._acts = acts
        self._probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        self._predictions = top_predictions(self._probs, loaded.spec.categories, topk)
        self._blocks = blocks
        self._timings = dict(timings)
        self._clear_caches()
        if maps and maps_target is not None:
            for stage, raw in maps.items():
                self._raw[("gradcam", maps_target, stage)] = raw
        if started is not None:
            self._timings["total"] = time.perf_counter() - started

    def _clear_caches(self) -> None:
        self._lock = threading.Lock()
        self._maps: dict[tuple[Any, ...], Attribution] = {}  # (method, target, *options, stage) -> map
        self._raw: dict[tuple[Any, ...], Tensor] = {}  # the same keys -> raw maps not yet asked for
        self._block_acts: dict[str, Tensor] = {}

    def fresh(self) -> Analysis:
        """A copy that shares this analysis's forward pass but none of its computed maps,
        so that every map asked of it is computed again (what a benchmark times)."""
        clone = object.__new__(Analysis)
        clone.__dict__.update(self.__dict__)
        clone._clear_caches()
        return clone

    # Immutable: copying returns the same object (gr.State deep-copies its values).
    def __copy__(self) -> Analysis:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Analysis:
        return self

    def __repr__(self) -> str:
        top = self._predictions[0]
        return f"Analysis({self.arch}, {self.spec.name}, top-1 {top.label!r} {top.prob:.3f})"

    # --- what the forward pass gave
    @property
    def arch(self) -> str:
        return self._loaded.spec.arch

    @property
    def spec(self) -> WeightsSpec:
        """The weights entry the model was loaded from: name, label, class names, preprocessing."""
        return self._loaded.spec

    @property
    def untrained(self) -> bool:
        return self._loaded.untrained

    @property
    def warning(self) -> str | None:
        return self._loaded.warning

    @property
    def status(self) -> str:
        return self._loaded.status

    @property
    def categories(self) -> tuple[str, ...]:
        return self._loaded.spec.categories

    @property
    def image(self) -> Image.Image:
        return self._prepared.image

    @property
    def crop(self) -> Image.Image:
        return self._prepared.crop

    @property
    def crop_box(self) -> CropBox:
        return self._prepared.crop_box

    @property
    def predictions(self) -> list[Prediction]:
        return list(self._predictions)

    @property
    def blocks(self) -> list[BlockStat]:
        return list(self._blocks)

    @property
    def timings(self) -> dict[str, float]:
        return dict(self._timings)

    @property
    def stage_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {s: tuple(a.shape[1:]) for s, a in self._acts.items()}  # type: ignore[misc]

    def top(self, k: int) -> list[Prediction]:
        """The k most probable classes (any k, not only the one asked of :func:`analyze`)."""
        return top_predictions(self._probs, self.categories, k)

    def prob(self, index: int) -> float:
        return float(self._probs[self._check_target(index)])

    def probabilities(self) -> np.ndarray:
        """Softmax over all classes, (num_classes,) float32; a copy."""
        return self._probs.copy()

    # --- feature maps
    def feature_maps(self, stage: str, *, n: int = 16, tile: int = 96) -> FeatureGrid:
        """The ``n`` channels with the highest mean activation, as a grid image.

        ``stage`` is a stage ("layer3") or a block ("layer3.0"). A block's output is
        recomputed from the stored output of the stage before it (at most one stage of
        the network, in inference mode: the same numbers the forward pass produced).
        """
        act = self._activation(stage)[0]  # (C, H, W), stored channels_last: (H, W, C) in memory
        c, h, w = act.shape
        pixels = act.permute(1, 2, 0).reshape(h * w, c)  # a view for channels_last: no copy
        means_t = pixels.float().mean(dim=0)  # (C,)
        n = max(1, min(int(n), c))
        means, order = torch.topk(means_t, n)  # sorted, strongest first
        maps = pixels[:, order].float().T.reshape(n, h, w)  # (n, H, W)
        return FeatureGrid(
            stage=stage,
            shape=(c, h, w),
            channels=[int(i) for i in order.tolist()],
            image=grid(maps.cpu().numpy(), tile=tile),
            means=[float(v) for v in means.tolist()],
        )

    def _activation(self, name: str) -> Tensor:
        if name in self._acts:
            return self._acts[name]
        stage, _, index = name.partition(".")
        if stage not in self._acts or stage == "stem" or not index.isdigit():
            raise UserError(f"Unknown stage or block {name!r}; choose one of {', '.join(STAGES)} or a block like layer3.0.")
        layer = self._model.stages[stage]
        if int(index) >= len(layer):
            raise UserError(f"{stage} has blocks {stage}.0 to {stage}.{len(layer) - 1}; there is no {name}.")
        with self._lock:
            hit = self._block_acts.get(name)
        if hit is not None:
            return hit
        previous = STAGES[STAGES.index(stage) - 1]
        with torch.inference_mode():
            x = self._acts[previous]
            for block in list(layer)[: int(index) + 1]:
                x = block(x)
        with self._lock:
            return _remember(self._block_acts, name, x, limit=8)  # a few recent blocks, not all fifty

    # --- attributions
    def attribution(
        self, *, stage: str = "layer4", target: int | None = None, method: str = "gradcam", **options: int
    ) -> Attribution:
        """One explanation map of ``method`` at ``stage`` for class ``target`` (None: the top-1).

        ``method`` is a name in the registry (:data:`~resnet_demo.explain.METHODS`).
        ``stage`` applies to layer methods (Grad-CAM, Guided Grad-CAM); input methods
        (Integrated Gradients, Occlusion) attribute to pixels and say stage "input".
        ``options`` are the method's: Integrated Gradients takes ``ig_steps`` (default
        32) and ``noise_tunnel_samples`` (> 0 smooths it with NoiseTunnel, SmoothGrad,
        costing that many times more); options of other methods are ignored.
        """
        entry = get_method(method)
        stage = "input" if entry.space == "input" else check_stage(stage)
        return self.attributions(stages=(stage,), target=target, method=method, **options)[stage]

    def attributions(
        self, *, stages: Iterable[str] = STAGES, target: int | None = None, method: str = "gradcam", **options: int
    ) -> dict[str, Attribution]:
        """Maps of ``method`` (default Grad-CAM) at several stages for one class, by stage.

        Grad-CAM serves them all from at most one backward pass: ``layer4`` costs none;
        the others rerun the network from the earliest stage asked for, using the stored
        activation, and backpropagate only down to it. An input method returns its one
        map under "input", whatever ``stages`` says.
        """
        entry = get_method(method)
        opts = method_options(entry, options)
        wanted = ["input"] if entry.space == "input" else [check_stage(s) for s in dict.fromkeys(stages)]
        target = self._predictions[0].index if target is None else self._check_target(target)
        key = (entry.name, target, *opts.values())
        with self._lock:
            results = {s: self._maps[(*key, s)] for s in wanted if (*key, s) in self._maps}
            raws = {s: self._raw[(*key, s)] for s in wanted if s not in results and (*key, s) in self._raw}
        todo = [s for s in wanted if s not in results]
        if not todo:
            return {s: results[s] for s in wanted}
        t0 = time.perf_counter()
        need = tuple(s for s in todo if s not in raws)
        if need:
            call = MethodCall(self._model, self._prepared.tensor, self._acts, self.spec.preprocessing, need, target, opts)
            got = entry.compute(call)
            raws.update({s: got[s] for s in need})
            with self._lock:
                for s, raw in got.items():
                    if s not in need:
                        _remember(self._raw, (*key, s), raw, limit=_CACHE_RAW)
        size = self.crop.size[::-1]  # (H, W)
        finished = {s: entry.finish(raws[s], size) for s in todo}
        seconds = (time.perf_counter() - t0) / len(todo)
        for s in todo:
            made = self._make(s, target, entry.name, *finished[s], seconds)
            with self._lock:
                results[s] = _remember(self._maps, (*key, s), made, limit=_CACHE_MAPS)
        return {s: results[s] for s in wanted}

    # --- internals
    def _check_target(self, target: int) -> int:
        n = len(self.categories)
        if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < n:
            raise UserError(f"Class {target!r} does not exist: this model has classes 0 to {n - 1}.")
        return int(target)

    def _make(
        self, stage: str, target: int, method: str, heat: np.ndarray, raw: np.ndarray, all_zero: bool, seconds: float
    ) -> Attribution:
        heat.setflags(write=False)  # shared by every caller of the cache
        raw.setflags(write=False)
        return Attribution(
            stage=stage,
            target=target,
            target_label=class_label(self.categories, target),
            method=method,
            heatmap=heat,
            raw=raw,
            all_zero=all_zero,
            seconds=seconds,
            target_prob=float(self._probs[target]),
        )


def overlay_on_full(
    *, analysis: Analysis, attribution: Attribution, opacity: float = 0.5, max_side: int | None = None
) -> Image.Image:
    """The map placed back onto the whole uploaded image, outside the crop dimmed and the crop outlined.

    The result has the image's size, or at most ``max_side`` pixels on its longer side.
    """
    return overlay_box(
        image=analysis.image, heatmap=attribution.heatmap, box=analysis.crop_box, opacity=opacity, max_side=max_side
    )
