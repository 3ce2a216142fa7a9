"""class :class:`Analysis`: what one forward pass of one image computed, and everything derived from it.

Predictions, stage outputs and block statistics come from the pass itself; feature
maps and explanation maps are computed on request from the stored stage outputs,
through the method registry (:mod:`.methods`), and cached per analysis. An analysis
never changes after it is made, so it may be kept per user (``gr.State``) and used
from several threads at once.
"""

from __future__ import annotations

import functools
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..core.cache import BoundedCache
from ..core.errors import UserError
from ..core.features import feature_grid
from ..core.images import CropBox
from ..core.model import STAGES, ResNet
from ..core.render import overlay_box
from ..core.weights import LoadedModel, WeightsSpec
from .classes import class_label
from .gradcam import GradientCache
from .methods import Method, MethodCall, get_method, method_options, no_progress
from .network import input_of
from .results import Attribution, BlockStat, FeatureGrid, Prediction, Prepared, top_predictions

__all__ = ["Analysis", "overlay_on_full"]

# Finished maps kept per analysis (224x224 float32 each: 200 kB); the oldest go first.
_CACHE_MAPS = 48
# Raw maps a method computed without being asked (Grad-CAM's stages on the way down): small.
_CACHE_RAW = 5 * _CACHE_MAPS


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
        gradients: dict[str, Tensor] | Callable[[], dict[str, Tensor]] | None = None,
        gradients_target: int | None = None,
        started: float | None = None,
        precision: str = "float32",
    ) -> None:
        """``gradients`` are the stage gradients of class ``gradients_target``'s logit computed with the pass
        (or the backward that computes them, run when first needed);
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
        self._precision = precision
        self._clear_caches()
        if callable(gradients) and gradients_target is not None:
            self._grads.seed_later(target=gradients_target, versus=None, backward=gradients)
        elif gradients and gradients_target is not None:
            self._grads.seed(target=gradients_target, versus=None, gradients=gradients)
        if started is not None:
            self._timings["total"] = time.perf_counter() - started

    def _clear_caches(self) -> None:
        # (method, target, versus, *options, stage) -> map
        self._maps: BoundedCache[tuple[Any, ...], Attribution] = BoundedCache(_CACHE_MAPS)
        # The same keys -> raw maps computed on the way but not yet asked for, and those of
        # methods that ignore the class (keyed with target and versus None).
        self._raw: BoundedCache[tuple[Any, ...], Tensor] = BoundedCache(_CACHE_RAW)
        self._block_acts: BoundedCache[str, Tensor] = BoundedCache(8)  # a few recent blocks, not all fifty
        # What the CAM family weighs: float32 gradients, from the float32 stem when later stages were rounded.
        rerun_from = None if self._precision == "float32" else "stem"
        self._grads = GradientCache(model=self._model, activations=self._acts, rerun_from=rerun_from)

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

    # --- what the pass ran on: read-only handles for code that builds on an analysis
    @property
    def model(self) -> ResNet:
        """The inference network this analysis ran: folded, ``channels_last``, frozen, shared.

        Call it under ``torch.inference_mode()`` for batched forwards of (B, 3, H, W)
        tensors; never hook or modify it (copy it for that).
        """
        return self._model

    @property
    def input(self) -> Tensor:
        """The preprocessed crop as the model takes it: (1, 3, H, W) float, on the model's
        device, ``channels_last``; a fresh tensor on each access."""
        return input_of(self._model, self._prepared.tensor).clone(memory_format=torch.channels_last)

    @property
    def precision(self) -> str:
        """The format the forward ran in: "float32", or "bfloat16" (stages rounded; gradients still float32's)."""
        return self._precision

    @property
    def loaded(self) -> LoadedModel:
        """The :class:`~resnet_demo.core.weights.LoadedModel` this analysis ran (the shared model, unfolded)."""
        return self._loaded

    @property
    def prepared(self) -> Prepared:
        """The prepared image: pass it as ``image=`` to :func:`analyze` to rerun without reloading."""
        return self._prepared

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
    def feature_maps(self, stage: str, *, n: int = 16, tile: int = 96, first: Sequence[int] = ()) -> FeatureGrid:
        """The ``n`` channels with the highest mean activation, as a grid image (``first``: channels shown before them).

        ``stage`` is a stage ("layer3") or a block ("layer3.0"). A block's output is
        recomputed from the stored output of the stage before it (at most one stage of
        the network, in inference mode: the same numbers the forward pass produced).
        """
        return feature_grid(self._activation(stage)[0], stage=stage, n=n, tile=tile, first=first)

    def _activation(self, name: str) -> Tensor:
        if name in self._acts:
            return self._acts[name]
        stage, _, index = name.partition(".")
        if stage not in self._acts or stage == "stem" or not index.isdigit():
            raise UserError(
                f"Unknown stage or block {name!r}; choose one of {', '.join(STAGES)} or a block like layer3.0."
            )
        layer = self._model.stages[stage]
        if int(index) >= len(layer):
            raise UserError(f"{stage} has blocks {stage}.0 to {stage}.{len(layer) - 1}; there is no {name}.")
        hit = self._block_acts.get(name)
        if hit is not None:
            return hit
        previous = STAGES[STAGES.index(stage) - 1]
        with torch.inference_mode():
            x = self._acts[previous]
            for block in list(layer)[: int(index) + 1]:
                x = block(x)
        return self._block_acts.put(name, x)

    # --- attributions
    def attribution(
        self,
        *,
        stage: str = "layer4",
        target: int | None = None,
        method: str = "gradcam",
        versus: int | None = None,
        progress: Callable[[float], None] | None = None,
        **options: int,
    ) -> Attribution:
        """One explanation map of ``method`` at ``stage`` for class ``target`` (None: the top-1).

        ``method`` is a name in the registry (:data:`~resnet_demo.explain.METHODS`).
        ``stage`` applies to layer methods (the CAM family, Guided Grad-CAM); input
        methods (Integrated Gradients, Occlusion) attribute to pixels and say stage
        "input". ``versus``, a second class, makes the map contrastive: it explains
        logit(target) - logit(versus), "why this class and not that one". ``progress``
        is called with the fraction done (0..1) by the expensive methods. ``options``
        are the method's: Integrated Gradients takes ``ig_steps`` (default 32) and
        ``noise_tunnel_samples`` (> 0 smooths it with NoiseTunnel, SmoothGrad, costing
        that many times more); Score-CAM and Ablation-CAM take ``channels``; options of
        other methods are ignored. A stage the method does not support, an unknown
        method or class, or a contrast the method cannot make is a :class:`UserError`.
        """
        entry = get_method(method)
        stage = "input" if entry.space == "input" else stage
        found = self.attributions(
            stages=(stage,), target=target, method=method, versus=versus, progress=progress, **options
        )
        return found[stage]

    def attributions(
        self,
        *,
        stages: Iterable[str] | None = None,
        target: int | None = None,
        method: str = "gradcam",
        versus: int | None = None,
        progress: Callable[[float], None] | None = None,
        **options: int,
    ) -> dict[str, Attribution]:
        """Maps of ``method`` (default Grad-CAM) at several stages for one class, by stage.

        ``stages`` None means every stage the method supports (CAM: layer4 only). The
        CAM family serves every stage and every member from at most one backward pass
        per class, shared and cached: ``layer4`` costs none; the others rerun the
        network from the earliest stage asked for, using the stored activation, and
        backpropagate only down to it. An input method returns its one map under
        "input", whatever ``stages`` says. Arguments as in :meth:`attribution`.
        """
        entry = get_method(method)
        opts = method_options(entry, options)
        wanted = self._stages_of(entry, stages)
        target, versus = self._classes(entry, target, versus)
        key = (entry.name, target, versus, *opts.values())
        # A map that ignores the class (Eigen-CAM) is the same raw map for every class: computed once.
        raw_key = key if entry.class_specific else (entry.name, None, None, *opts.values())
        results = {s: m for s in wanted if (m := self._maps.get((*key, s))) is not None}
        raws = {s: r for s in wanted if s not in results and (r := self._raw.get((*raw_key, s))) is not None}
        todo = [s for s in wanted if s not in results]
        if not todo:
            return {s: results[s] for s in wanted}
        t0 = time.perf_counter()
        need = tuple(s for s in todo if s not in raws)
        if need:
            got = entry.compute(self._call(need, target, versus, opts, progress))
            raws.update({s: got[s] for s in need})
            for s, raw in got.items():
                if s not in need or raw_key is not key:
                    self._raw.put((*raw_key, s), raw)
        size = self.crop.size[::-1]  # (H, W)
        finished = {s: entry.finish(raws[s], size) for s in todo}
        seconds = (time.perf_counter() - t0) / len(todo)
        for s in todo:
            made = self._make(s, target, versus, entry.name, *finished[s], seconds)
            results[s] = self._maps.put((*key, s), made)
        return {s: results[s] for s in wanted}

    def method_call(
        self,
        *,
        method: str,
        stages: Iterable[str] | None = None,
        target: int | None = None,
        versus: int | None = None,
        progress: Callable[[float], None] | None = None,
        **options: int,
    ) -> MethodCall:
        """What ``method``'s ``compute`` is given for this request, every argument checked as
        :meth:`attributions` checks it (its target the top class when None): for engines that
        need more of a method than its map (CRP's and DFF's concepts, LRP's conservation)."""
        entry = get_method(method)
        target, versus = self._classes(entry, target, versus)
        opts = method_options(entry, options)
        return self._call(tuple(self._stages_of(entry, stages)), target, versus, opts, progress)

    def _call(
        self,
        stages: tuple[str, ...],
        target: int,
        versus: int | None,
        options: dict[str, int],
        progress: Callable[[float], None] | None,
    ) -> MethodCall:
        # A rounded (bfloat16) pass: a map weighs float32's activations once its gradients' rerun has made them.
        acts = self._acts if self._precision == "float32" else ChainMap(self._grads.exact_activations, self._acts)
        return MethodCall(
            self._model,
            self._prepared.tensor,
            acts,
            self.spec.preprocessing,
            stages,
            target,
            options,
            versus=versus,
            gradients=functools.partial(self._grads.get, target=target, versus=versus),
            progress=progress or no_progress,
        )

    def fusion(
        self,
        *,
        target: int | None = None,
        method: str = "gradcam",
        versus: int | None = None,
        progress: Callable[[float], None] | None = None,
        **options: int,
    ) -> Attribution:
        """The element-wise maximum of ``method``'s normalised maps of every stage it supports, stage "fusion".

        LayerCAM's multi-stage fusion (Jiang et al., 2021): the early stages see fine
        detail, the late ones whole objects; each map is upsampled to the crop and
        scaled to [0, 1] first, so every stage counts alike. Its ``raw`` is the fused
        map itself. Arguments as in :meth:`attribution`; input methods have no stages.
        """
        entry = get_method(method)
        if entry.space != "layer":
            raise UserError(f"{entry.label} attributes to pixels, not to stages: fuse a stage method such as Grad-CAM.")
        opts = method_options(entry, options)
        target, versus = self._classes(entry, target, versus)
        key = (entry.name, target, versus, *opts.values(), "fusion")
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        maps = self.attributions(target=target, method=method, versus=versus, progress=progress, **options)
        t0 = time.perf_counter()
        heat = np.maximum.reduce([m.heatmap for m in maps.values()])  # (H, W): a new array
        all_zero = all(m.all_zero for m in maps.values())
        seconds = sum(m.seconds for m in maps.values()) + time.perf_counter() - t0
        made = self._make("fusion", target, versus, entry.name, heat, heat.copy(), all_zero, seconds)
        return self._maps.put(key, made)

    # --- internals
    def _check_target(self, target: int) -> int:
        n = len(self.categories)
        if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < n:
            raise UserError(f"Class {target!r} does not exist: this model has classes 0 to {n - 1}.")
        return int(target)

    def _classes(self, entry: Method, target: int | None, versus: int | None) -> tuple[int, int | None]:
        """The class to explain (None: the top-1) and the contrast class, checked."""
        target = self._predictions[0].index if target is None else self._check_target(target)
        if versus is None:
            return target, None
        versus = self._check_target(versus)
        if not entry.class_specific:
            raise UserError(f"{entry.label} ignores the class, so it has no contrastive map: leave the contrast empty.")
        if versus == target:
            label = class_label(self.categories, target)
            raise UserError(f"A class cannot be explained against itself: contrast {label!r} with another class.")
        return target, versus

    @staticmethod
    def _stages_of(entry: Method, stages: Iterable[str] | None) -> list[str]:
        """The stages asked of ``entry``: checked, in order, without repeats (None: all it supports)."""
        if entry.space == "input":
            return ["input"]
        if stages is None:
            return list(entry.supported_stages)
        return [entry.check_stage(s) for s in dict.fromkeys(stages)]

    def _make(
        self,
        stage: str,
        target: int,
        versus: int | None,
        method: str,
        heat: np.ndarray,
        raw: np.ndarray,
        all_zero: bool,
        seconds: float,
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
            versus=versus,
            versus_label=None if versus is None else class_label(self.categories, versus),
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
