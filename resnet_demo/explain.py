"""The explanation engine: predictions, Grad-CAM for any stage and class, feature maps
and per-block statistics of one image, from one forward pass.

:func:`analyze` runs the network once and returns an :class:`Analysis` that holds
what that pass computed: the top-k predictions, the activation of every stage and
the statistics of every bottleneck block. Everything else is derived from it:

* Grad-CAM at ``layer4`` needs no backward pass at all. After ``layer4`` come a
  global average pool and the ``fc`` layer, so d logit_c / d A_k(i, j) = w_ck / (H W)
  for every position, and Grad-CAM reduces to CAM: ReLU(sum_k w_ck A_k) / (H W).
  The test suite checks this against captum's ``LayerGradCam``.
* Grad-CAM at an earlier stage reruns only the network *after* that stage, from the
  stored activation, and one backward pass down to it yields the gradients of that
  stage and of every later one (:meth:`Analysis.attributions`). It is the formula of
  captum's ``LayerGradCam`` (mean gradient per channel times activation, summed, ReLU),
  which takes a forward and a backward per layer and hooks the model; the test suite
  checks every stage against ``LayerGradCam``. Maps are upsampled with captum's
  ``LayerAttribution.interpolate`` (bilinear).
* Guided Grad-CAM, Integrated Gradients (optionally with NoiseTunnel) and Occlusion
  come from captum on request; they cost tens to hundreds of forward passes, see
  :func:`method_cost`.

The network used is an inference copy of the shared model (BatchNorm folded into
the convolutions, ``channels_last``), cached per model. Nothing is ever hooked or
changed on a shared model: the methods that need hooks (guided backprop) get a
per-call shell of the network that shares its weights but owns its modules. So an
:class:`Analysis` may be kept per user (``gr.State``) and used from several threads.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, LayerAttribution, NoiseTunnel, Occlusion
from PIL import Image
from torch import Tensor, nn

from .devices import configure_threads
from .errors import UserError
from .fold import inference_copy
from .images import CropBox, ImageSource, load_image, preprocess
from .model import ARCH_DEPTHS, STAGES, ResNet
from .render import grid, overlay, overlay_box
from .weights import DEFAULT_WEIGHTS, LoadedModel, Preprocessing, WeightsSpec, shared_model, weights_spec

__all__ = [
    "METHODS",
    "STAGES",
    "Analysis",
    "Attribution",
    "BlockStat",
    "FeatureGrid",
    "Prediction",
    "Prepared",
    "analyze",
    "find_class",
    "inference_model",
    "method_cost",
    "overlay",
    "overlay_on_full",
    "predict",
    "prepare",
    "resolve_class",
]

METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "guided-gradcam": "Guided Grad-CAM",
    "ig": "Integrated Gradients",
    "occlusion": "Occlusion",
}

# Methods whose map lives in input space; the stage does not apply to them.
_INPUT_METHODS = frozenset({"ig", "occlusion"})

# Integrated Gradients: Riemann steps and how many of them go through the network at once.
IG_STEPS = 32
IG_BATCH = 4
# NoiseTunnel (SmoothGrad) noise, as a fraction of the input's value range.
NOISE_STDEV = 0.15
# Occlusion: a grey (dataset-mean) square of a quarter of the crop, moved by half its side.
OCCLUSION_WINDOW = 4  # crop side / window side
OCCLUSION_BATCH = 7

# captum announces every guided-backprop call with a UserWarning; the hooks it means sit
# on a per-call shell (see _shell), so the warning says nothing useful here.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float


@dataclass(frozen=True)
class BlockStat:
    """One bottleneck block, for the diagram: how much its branch F(x) adds to x."""

    name: str  # "layer3.0"
    stage: str  # "layer3"
    index: int  # position in its stage
    out_shape: tuple[int, int, int]  # (C, H, W)
    mean_activation: float  # mean of the block's output
    residual_ratio: float  # ||F(x)|| / ||x||, x being the shortcut (projected where the shape changes)
    residual_norm: float = 0.0  # ||F(x)||
    shortcut_norm: float = 0.0  # ||x||
    projection: bool = False  # the shortcut is a strided 1x1 projection, not the identity


@dataclass(frozen=True)
class FeatureGrid:
    """The top channels of one stage's output by mean activation, drawn as a grid."""

    stage: str
    shape: tuple[int, int, int]  # (C, H, W) of the stage output
    channels: list[int]  # channel indices in the grid, row by row, strongest first
    image: Image.Image  # RGB grid; each tile scaled by its own maximum
    means: list[float]  # mean activation of each shown channel


@dataclass(frozen=True, eq=False)
class Attribution:
    """One explanation map for one class.

    ``heatmap`` is the map on the crop the model saw, (crop_h, crop_w) float32 in
    [0, 1]. ``raw`` is the map before upsampling and normalising: (h, w) at the
    stage's resolution for Grad-CAM, (3, H, W) per input channel for Guided
    Grad-CAM and Integrated Gradients, (H, W) for Occlusion. ``all_zero`` means the
    map has no positive evidence (e.g. Grad-CAM for a class the region argues
    against); its heatmap is then all zeros, never NaN.
    """

    stage: str  # a stage, or "input" for methods that attribute to pixels
    target: int
    target_label: str
    method: str
    heatmap: np.ndarray
    raw: np.ndarray
    all_zero: bool
    seconds: float
    target_prob: float = 0.0


@dataclass(frozen=True, eq=False)
class Prepared:
    """An image loaded and preprocessed for one weights entry (see :func:`prepare`)."""

    image: Image.Image  # the whole image, RGB
    tensor: Tensor  # (1, 3, crop, crop), normalised
    crop: Image.Image  # what the model saw
    crop_box: CropBox  # where that is in ``image``
    preprocessing: Preprocessing
    timings: dict[str, float]


# --------------------------------------------------------------------------- the network

# One inference copy per shared model, made on first use. Keyed weakly, so a model that
# is dropped takes its copy along; the fingerprint notices a model updated in place.
_FAST: weakref.WeakKeyDictionary[ResNet, tuple[tuple[int, ...], ResNet]] = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def _fingerprint(model: nn.Module) -> tuple[int, ...]:
    return tuple(t._version for t in itertools.chain(model.parameters(), model.buffers()))


def inference_model(model: ResNet) -> ResNet:
    """The folded, ``channels_last`` inference copy of ``model`` (see :mod:`resnet_demo.fold`), cached.

    ``model`` itself is only read. The copy is shared read-only like the model.
    """
    fingerprint = _fingerprint(model)
    with _FAST_LOCK:
        hit = _FAST.get(model)
        if hit is None or hit[0] != fingerprint:
            hit = (fingerprint, inference_copy(model))
            _FAST[model] = hit
        return hit[1]


_POSITION = {name: i for i, name in enumerate(("input", *STAGES))}


def _infer(model: ResNet, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The inference pass (call under inference mode): logits, stage outputs, and the
    statistics of every block as a (blocks, 3) tensor. What ``compile=True`` compiles."""
    stats: list[Tensor] = []
    logits, acts = model.forward_stages(x, stats=stats)
    assert logits is not None
    return logits, acts, torch.stack(stats).view(-1, 3)


_COMPILED: weakref.WeakKeyDictionary[ResNet, Callable[[Tensor], tuple[Tensor, dict[str, Tensor], Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def _inference_pass(model: ResNet, x: Tensor, *, compile: bool) -> tuple[Tensor, dict[str, Tensor], Tensor]:
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


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- inputs


def prepare(*, image: ImageSource | Prepared, preprocessing: Preprocessing) -> Prepared:
    """Load ``image`` (see :func:`~resnet_demo.images.load_image`) and preprocess it for a weights entry."""
    if isinstance(image, Prepared):
        if image.preprocessing == preprocessing:
            return image
        return _preprocessed(image.image, preprocessing, load_s=0.0)
    t0 = time.perf_counter()
    full = load_image(image)
    return _preprocessed(full, preprocessing, load_s=time.perf_counter() - t0)


def _preprocessed(full: Image.Image, preprocessing: Preprocessing, *, load_s: float) -> Prepared:
    t0 = time.perf_counter()
    tensor, crop, box = preprocess(full, preprocessing=preprocessing)
    return Prepared(full, tensor, crop, box, preprocessing, {"load": load_s, "preprocess": time.perf_counter() - t0})


def _load_then_prepare(
    image: ImageSource | Prepared, get: Callable[[], LoadedModel]
) -> tuple[LoadedModel, Prepared]:
    """Read the image before the model: a bad file is reported without loading 100 MB of weights."""
    if isinstance(image, Prepared):
        lm = get()
        return lm, prepare(image=image, preprocessing=lm.spec.preprocessing)
    t0 = time.perf_counter()
    full = load_image(image)
    load_s = time.perf_counter() - t0
    lm = get()
    return lm, _preprocessed(full, lm.spec.preprocessing, load_s=load_s)


def _loaded(*, arch: str, weights: str, fallback_to_random: bool, loaded: LoadedModel | None) -> LoadedModel:
    return loaded if loaded is not None else shared_model(arch=arch, weights=weights, fallback_to_random=fallback_to_random)


def _predictions(probs: np.ndarray, categories: Sequence[str], k: int) -> list[Prediction]:
    k = max(1, min(int(k), probs.shape[0]))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(int(i), _label(categories, int(i)), float(probs[i])) for i in order]


def _label(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class {index}"


def predict(
    *,
    image: ImageSource | Prepared,
    arch: str = "resnet50",
    weights: str = DEFAULT_WEIGHTS,
    topk: int = 5,
    fallback_to_random: bool = False,
    loaded: LoadedModel | None = None,
    compile: bool = False,
) -> list[Prediction]:
    """Top-k classes only: the cheapest path (no intermediate outputs kept; see :func:`analyze` for ``compile``)."""
    configure_threads()
    lm, prepared = _load_then_prepare(
        image, lambda: _loaded(arch=arch, weights=weights, fallback_to_random=fallback_to_random, loaded=loaded)
    )
    model = inference_model(lm.model)
    with torch.inference_mode():
        x = prepared.tensor.to(_device(model)).contiguous(memory_format=torch.channels_last)
        logits = _inference_pass(model, x, compile=True)[0] if compile else model(x)
        probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return _predictions(probs, lm.spec.categories, topk)


# --------------------------------------------------------------------------- Grad-CAM


def _gradcam_from_grads(act: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM as captum's LayerGradCam computes it: ReLU(sum_k mean_ij(dy/dA_k) A_k), (1, 1, h, w)."""
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    return torch.relu((alpha * act).sum(dim=1, keepdim=True))


def _cam_layer4(model: ResNet, layer4: Tensor, target: int) -> Tensor:
    """Grad-CAM at layer4 without a backward pass: the gradient is w_c / (H W) everywhere."""
    h, w = layer4.shape[-2:]
    weight = model.fc.weight[target].to(layer4.dtype)  # (C,)
    cam = torch.einsum("c,bchw->bhw", weight, layer4).unsqueeze(1)  # (1, 1, h, w)
    return torch.relu(cam) / (h * w)


def _grad_segment(
    model: ResNet,
    act: Tensor,
    *,
    start: str,
    stages: Sequence[str],
    target: int | None,
    stats: list[Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], int]:
    """Forward from ``start``'s activation with autograd, then ONE backward down to the
    earliest requested stage. Returns logits, activations, raw Grad-CAM maps (1, 1, h, w)
    of ``stages``, and the target (the top-1 class if ``target`` is None)."""
    leaf = act.detach().clone().requires_grad_(True)  # a normal tensor even if ``act`` is an inference tensor
    with torch.enable_grad(), torch.autocast(device_type=leaf.device.type, enabled=False):
        logits, acts = model.forward_stages(leaf, start=start, stats=stats)
        assert logits is not None
        if target is None:
            target = int(logits[0].argmax())
        wanted = [s for s in stages if s != "layer4"]
        grads = torch.autograd.grad(logits[0, target], [acts[s] for s in wanted]) if wanted else ()
    with torch.no_grad():
        maps = {s: _gradcam_from_grads(acts[s].detach(), g) for s, g in zip(wanted, grads, strict=True)}
        if "layer4" in stages:  # cheaper, and the same number (see module docstring)
            maps["layer4"] = _cam_layer4(model, acts["layer4"].detach(), target)
    return logits.detach(), {k: v.detach() for k, v in acts.items()}, maps, target


def _shell(model: ResNet) -> ResNet:
    """A copy of ``model``'s module tree that shares every weight: hooks on it touch no one else."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def _finish_layer_map(raw: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Upsample a (1, 1, h, w) map bilinearly to ``size`` and scale it to [0, 1], NaN-free."""
    raw = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0)
    up = LayerAttribution.interpolate(raw, size, interpolate_mode="bilinear")[0, 0]
    peak = float(up.max())
    all_zero = not bool((raw > 0).any()) or peak <= 0.0
    heat = torch.zeros_like(up) if all_zero else (up / peak).clamp_(0.0, 1.0)
    return heat.cpu().numpy().astype(np.float32), raw[0, 0].cpu().numpy().astype(np.float32), all_zero


def _finish_input_map(attr: Tensor, method: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Turn a (1, 3, H, W) input attribution into a [0, 1] heat map."""
    attr = torch.nan_to_num(attr.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)[0]  # (3, H, W)
    if method == "occlusion":
        raw = attr.mean(dim=0)  # the window spans all channels: they hold the same value
        m = raw.clamp(min=0.0)  # evidence for the class: covering it lowers the score
        scale = float(m.max())
    else:
        raw = attr
        m = attr.abs().sum(dim=0)
        # Pixel attributions are heavy-tailed: a few pixels would otherwise wash out the rest.
        scale = float(torch.quantile(m.flatten(), 0.99)) if m.numel() else 0.0
        scale = scale if scale > 0 else float(m.max())
    all_zero = scale <= 0.0
    heat = torch.zeros_like(m) if all_zero else (m / scale).clamp(0.0, 1.0)
    return heat.cpu().numpy().astype(np.float32), raw.cpu().numpy().astype(np.float32), all_zero


# --------------------------------------------------------------------------- Analysis


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
    ) -> None:
        self._loaded = loaded
        self._model = model
        self._prepared = prepared
        self._acts = acts
        self._probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        self._predictions = _predictions(self._probs, loaded.spec.categories, topk)
        self._blocks = blocks
        self._timings = timings
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], Attribution] = {}
        self._raw_gradcam: dict[tuple[str, int], Tensor] = {}
        self._block_acts: dict[str, Tensor] = {}
        if maps and maps_target is not None:
            for stage, raw in maps.items():
                self._raw_gradcam[(stage, maps_target)] = raw

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
        return _predictions(self._probs, self.categories, k)

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
        self,
        *,
        stage: str = "layer4",
        target: int | None = None,
        method: str = "gradcam",
        noise_tunnel_samples: int = 0,
        ig_steps: int = IG_STEPS,
    ) -> Attribution:
        """One explanation map of ``method`` at ``stage`` for class ``target`` (None: the top-1).

        ``stage`` applies to Grad-CAM and Guided Grad-CAM; Integrated Gradients and
        Occlusion attribute to pixels (their result says stage "input").
        ``noise_tunnel_samples`` > 0 smooths Integrated Gradients with NoiseTunnel
        (SmoothGrad), costing that many times more.
        """
        if method not in METHODS:
            raise UserError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        stage = "input" if method in _INPUT_METHODS else _check_stage(stage)
        target = self._predictions[0].index if target is None else self._check_target(target)
        if method == "gradcam":
            return self.attributions(stages=(stage,), target=target)[stage]
        extra = (int(noise_tunnel_samples), int(ig_steps)) if method == "ig" else ()
        key = (method, stage, target, *extra)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        attr = self._input_attribution(method, stage, target, noise_tunnel_samples, ig_steps)
        heat, raw, all_zero = _finish_input_map(attr, method)
        result = self._make(stage, target, method, heat, raw, all_zero, time.perf_counter() - t0)
        with self._lock:
            return _remember(self._cache, key, result, limit=_CACHE_MAPS)

    def attributions(self, *, stages: Iterable[str] = STAGES, target: int | None = None) -> dict[str, Attribution]:
        """Grad-CAM at several stages for one class, from at most one backward pass.

        ``layer4`` costs no backward; the others rerun the network from the earliest
        stage asked for, using the stored activation, and backpropagate only down to it.
        """
        stages = [_check_stage(s) for s in dict.fromkeys(stages)]
        target = self._predictions[0].index if target is None else self._check_target(target)
        results: dict[str, Attribution] = {}
        with self._lock:
            for s in stages:
                hit = self._cache.get(("gradcam", s, target))
                if hit is not None:
                    results[s] = hit
        todo = [s for s in stages if s not in results]
        if todo:
            t0 = time.perf_counter()
            raws = self._raw_maps(todo, target)
            per_stage = (time.perf_counter() - t0) / len(todo)
            size = self.crop.size[::-1]  # (H, W)
            for s in todo:
                heat, raw, all_zero = _finish_layer_map(raws[s], size)
                made = self._make(s, target, "gradcam", heat, raw, all_zero, per_stage)
                with self._lock:
                    results[s] = _remember(self._cache, ("gradcam", s, target), made, limit=_CACHE_MAPS)
        return {s: results[s] for s in stages}

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
            target_label=_label(self.categories, target),
            method=method,
            heatmap=heat,
            raw=raw,
            all_zero=all_zero,
            seconds=seconds,
            target_prob=float(self._probs[target]),
        )

    def _raw_maps(self, stages: list[str], target: int) -> dict[str, Tensor]:
        with self._lock:
            raws = {s: self._raw_gradcam[(s, target)] for s in stages if (s, target) in self._raw_gradcam}
        rest = [s for s in stages if s not in raws]
        if "layer4" in rest:
            raws["layer4"] = _cam_layer4(self._model, self._acts["layer4"], target)
        deep = [s for s in rest if s != "layer4"]
        if deep:
            start = min(deep, key=_POSITION.__getitem__)
            # The backward passes every later stage on its way down: their maps are free,
            # and a caller walking the stages one by one then pays for one backward only.
            on_the_way = [s for s in STAGES if _POSITION[s] >= _POSITION[start] and s != "layer4"]
            _, _, maps, _ = _grad_segment(
                self._model, self._acts[start], start=start, stages=on_the_way, target=target
            )
            with self._lock:
                for s, m in maps.items():
                    _remember(self._raw_gradcam, (s, target), m, limit=5 * _CACHE_MAPS)
            raws.update({s: maps[s] for s in deep})
        return raws

    def _input_attribution(self, method: str, stage: str, target: int, nt_samples: int, ig_steps: int) -> Tensor:
        model = self._model
        x = self._prepared.tensor.to(_device(model)).contiguous(memory_format=torch.channels_last)

        def forward(inp: Tensor) -> Tensor:
            # captum builds its batches (scaled or occluded copies) in the default layout.
            return model(inp.contiguous(memory_format=torch.channels_last))

        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            if method == "guided-gradcam":
                # Guided backprop hooks every ReLU, and needs them out of place: only the shell's.
                shell = _shell(model).set_inplace(False)
                layer = shell.maxpool if stage == "stem" else getattr(shell, stage)
                return GuidedGradCam(shell, layer).attribute(
                    x.clone().requires_grad_(True), target=target, interpolate_mode="bilinear"
                )
            if method == "ig":
                mean = torch.tensor(self.spec.preprocessing.mean, device=x.device).view(1, 3, 1, 1)
                std = torch.tensor(self.spec.preprocessing.std, device=x.device).view(1, 3, 1, 1)
                black = ((0.0 - mean) / std).expand_as(x).contiguous()  # a black image, normalised
                ig = IntegratedGradients(forward)
                kwargs = {"baselines": black, "target": target, "n_steps": ig_steps, "internal_batch_size": IG_BATCH}
                if nt_samples > 0:
                    stdev = NOISE_STDEV * float(x.max() - x.min())
                    return NoiseTunnel(ig).attribute(
                        x.clone(), nt_type="smoothgrad", nt_samples=nt_samples, nt_samples_batch_size=1,
                        stdevs=stdev, **kwargs,
                    )
                return ig.attribute(x.clone(), **kwargs)
        # Occlusion needs forwards only.
        side = x.shape[-1] // OCCLUSION_WINDOW
        with torch.inference_mode():
            return Occlusion(forward).attribute(
                x.clone(),
                sliding_window_shapes=(3, side, side),
                strides=(3, max(1, side // 2), max(1, side // 2)),
                baselines=0.0,  # the dataset mean colour
                target=target,
                perturbations_per_eval=OCCLUSION_BATCH,
            )


# Finished maps kept per analysis (224x224 float32 each: 200 kB); the oldest go first.
_CACHE_MAPS = 48


def _remember(cache: dict[Any, Any], key: Any, value: Any, *, limit: int) -> Any:
    """Store ``value`` unless ``key`` is there already; forget the oldest entries past ``limit``.

    Returns what the cache holds for ``key``. Call with the owner's lock held.
    """
    value = cache.setdefault(key, value)
    while len(cache) > limit:
        cache.pop(next(iter(cache)))
    return value


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise UserError(f"Unknown stage {stage!r}; choose one of {', '.join(STAGES)}.")
    return stage


def _block_stats(model: ResNet, names: list[str], numbers: Tensor, acts: dict[str, Tensor]) -> list[BlockStat]:
    """BlockStat per block from the (blocks, 3) numbers the forward collected: one copy to the host.

    Every block of a stage outputs the stage's shape, so the stage outputs give the shapes.
    """
    result = []
    for name, (f_norm, x_norm, mean) in zip(names, numbers.detach().float().cpu().tolist(), strict=True):
        stage, index = name.split(".")
        block = model.stages[stage][int(index)]
        ratio = f_norm / x_norm if x_norm > 0 else (math.inf if f_norm > 0 else 0.0)
        result.append(
            BlockStat(
                name=name,
                stage=stage,
                index=int(index),
                out_shape=tuple(acts[stage].shape[1:]),  # type: ignore[arg-type]
                mean_activation=float(mean),
                residual_ratio=float(ratio),
                residual_norm=float(f_norm),
                shortcut_norm=float(x_norm),
                projection=block.downsample is not None,
            )
        )
    return result


def analyze(
    *,
    image: ImageSource | Prepared,
    arch: str = "resnet50",
    weights: str = DEFAULT_WEIGHTS,
    topk: int = 5,
    fallback_to_random: bool = False,
    loaded: LoadedModel | None = None,
    gradcam_stages: Iterable[str] = (),
    compile: bool = False,
) -> Analysis:
    """Load ``image``, run the network once, and return an :class:`Analysis`.

    ``loaded`` overrides ``arch``/``weights`` (e.g. a fine-tuned model). Grad-CAM of
    the top-1 class at ``gradcam_stages`` is computed in the same pass: the forward
    then records autograd from the earliest of them and one backward serves all, so
    asking for every stage up front is cheaper than asking one by one later.
    ``compile=True`` runs the inference pass through ``torch.compile`` (about 15% faster
    on CPU, after a minute of compiling per model; not used with ``gradcam_stages``).
    Raises :class:`~resnet_demo.images.ImageError` or
    :class:`~resnet_demo.weights.WeightsError` (both :class:`UserError`) for bad input.
    """
    t0 = time.perf_counter()
    configure_threads()
    lm, prepared = _load_then_prepare(
        image, lambda: _loaded(arch=arch, weights=weights, fallback_to_random=fallback_to_random, loaded=loaded)
    )
    model = inference_model(lm.model)
    stages = [_check_stage(s) for s in dict.fromkeys(gradcam_stages)]
    t1 = time.perf_counter()

    x = prepared.tensor.to(_device(model)).contiguous(memory_format=torch.channels_last)
    maps: dict[str, Tensor] | None = None
    target: int | None = None
    stats: list[Tensor] = []
    names = model.block_names()
    grad_stages = [s for s in stages if s != "layer4"]
    if grad_stages:
        start = min(grad_stages, key=_POSITION.__getitem__)
        with torch.inference_mode():  # nothing before ``start`` needs a gradient
            _, early = model.forward_stages(x, stop=start, stats=stats)
        on_the_way = [s for s in STAGES if _POSITION[s] >= _POSITION[start]]  # their maps come free
        logits, late, maps, target = _grad_segment(
            model, early[start], start=start, stages=on_the_way, target=None, stats=stats
        )
        acts = {**early, **late}
        numbers = torch.stack(stats).detach().view(-1, 3)
    else:
        with torch.inference_mode():
            logits, acts, numbers = _inference_pass(model, x, compile=compile)
        if stages:
            target = int(logits[0].argmax())
            maps = {"layer4": _cam_layer4(model, acts["layer4"], target)}
    t2 = time.perf_counter()
    blocks = _block_stats(model, names, numbers, acts)
    t3 = time.perf_counter()
    timings = {
        **prepared.timings,
        "model": t1 - t0 - sum(prepared.timings.values()),
        "forward": t2 - t1,
        "block_stats": t3 - t2,
    }
    analysis = Analysis(
        loaded=lm,
        model=model,
        prepared=prepared,
        logits=logits,
        acts=acts,
        blocks=blocks,
        topk=topk,
        timings=timings,
        maps=maps,
        maps_target=target,
    )
    analysis._timings["total"] = time.perf_counter() - t0
    if not grad_stages and lm.spec.arch in ARCH_DEPTHS:
        _note_forward(t2 - t1, _gmacs(lm.spec.arch, x.shape[-1]))
    return analysis


def overlay_on_full(
    *, analysis: Analysis, attribution: Attribution, opacity: float = 0.5, max_side: int | None = None
) -> Image.Image:
    """The map placed back onto the whole uploaded image, outside the crop dimmed and the crop outlined.

    The result has the image's size, or at most ``max_side`` pixels on its longer side.
    """
    return overlay_box(
        image=analysis.image, heatmap=attribution.heatmap, box=analysis.crop_box, opacity=opacity, max_side=max_side
    )


# --------------------------------------------------------------------------- classes


def find_class(*, categories: Sequence[str], query: str) -> list[int]:
    """Indices of classes matching ``query``: an index, then exact names, then prefixes, then substrings.

    Case-insensitive; the order is best match first.
    """
    q = " ".join(query.strip().lower().split())
    if not q:
        return []
    names = [c.lower() for c in categories]
    found: dict[int, None] = {}
    if q.isdigit() and int(q) < len(categories):
        found[int(q)] = None
    for test in (
        lambda n: n == q,
        lambda n: n.startswith(q) or any(w.startswith(q) for w in n.replace("-", " ").split()),
        lambda n: q in n,
    ):
        for i, n in enumerate(names):
            if test(n):
                found.setdefault(i, None)
    return list(found)


def resolve_class(*, categories: Sequence[str], query: str | int) -> int:
    """One class from an index or a name; raises :class:`UserError` when none or several fit."""
    if isinstance(query, (int, np.integer)):
        if 0 <= int(query) < len(categories):
            return int(query)
        raise UserError(f"Class {query} does not exist: this model has classes 0 to {len(categories) - 1}.")
    matches = find_class(categories=categories, query=query)
    exact = [i for i in matches if categories[i].lower() == " ".join(query.strip().lower().split())]
    if query.strip().isdigit() and matches and matches[0] == int(query.strip()):
        return matches[0]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"No class matches {query!r}. Give a class index or part of a class name.")
    shown = ", ".join(f"{i} ({categories[i]})" for i in (exact or matches)[:10])
    raise UserError(f"{query!r} matches several classes: {shown}. Give the class index.")


# --------------------------------------------------------------------------- costs

# Seconds per method in units of one forward pass of the same network at the same size:
# `python -m resnet_demo bench --methods` on a quiet 2-core AMD EPYC at 224 px (ResNet-50).
# Grad-CAM's cost depends on how deep its backward goes, so it is priced per stage.
_RELATIVE_COST: dict[tuple[str, str], float] = {
    ("gradcam", "layer4"): 0.02,  # CAM: no backward
    ("gradcam", "layer3"): 0.6,
    ("gradcam", "layer2"): 1.25,
    ("gradcam", "layer1"): 1.6,
    ("gradcam", "stem"): 1.8,
    ("guided-gradcam", ""): 3.2,
    ("ig", ""): 47.0 / 32,  # per step (32 steps measured)
    ("occlusion", ""): 36.0,  # 49 window positions, in batches of 7
}
# A forward pass takes this many times (GMACs x the probe's seconds per GMAC): measured
# on the same machine (0.116 s for ResNet-50 against a probe of 0.0137 s per GMAC).
_FORWARD_PER_PROBE_GMAC = 2.06

_cost_lock = threading.Lock()
_probe_s_per_gmac: float | None = None
_forward_s_per_gmac: float | None = None  # from real forward passes of analyze(), when there were some


def _note_forward(seconds: float, gmacs: float) -> None:
    """Remember how fast forward passes really run here (a running average over calls)."""
    global _forward_s_per_gmac
    rate = seconds / gmacs
    with _cost_lock:
        _forward_s_per_gmac = rate if _forward_s_per_gmac is None else 0.8 * _forward_s_per_gmac + 0.2 * rate


def _seconds_per_gmac() -> float:
    """Seconds per GMAC of a forward pass: measured by analyze() if it ran, else a quick probe.

    The probe times a fixed convolution (0.46 GMAC) a few times, once per process.
    """
    global _probe_s_per_gmac
    with _cost_lock:
        if _forward_s_per_gmac is not None:
            return _forward_s_per_gmac
        if _probe_s_per_gmac is None:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 128, 56, 56, generator=g).contiguous(memory_format=torch.channels_last)
            w = torch.randn(128, 128, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
            best = math.inf
            with torch.inference_mode():
                for _ in range(4):
                    t0 = time.perf_counter()
                    torch.nn.functional.conv2d(x, w, padding=1)
                    best = min(best, time.perf_counter() - t0)
            _probe_s_per_gmac = _FORWARD_PER_PROBE_GMAC * best / (56 * 56 * 128 * 128 * 9 / 1e9)
        return _probe_s_per_gmac


def _gmacs(arch: str, image_size: int) -> float:
    return weights_spec(arch=arch, weights="imagenet-v2").published["gmacs"] * (image_size / 224) ** 2


def method_cost(
    *,
    method: str,
    arch: str,
    stage: str = "stem",
    image_size: int = 224,
    noise_tunnel_samples: int = 0,
    ig_steps: int = IG_STEPS,
) -> float:
    """Expected seconds for one map of ``method`` on this machine, to warn before slow ones.

    Measured relative costs times the speed of this machine's forward passes (taken
    from the analyses run so far, else from a quick probe). Grad-CAM's cost depends on
    the stage (``layer4`` is nearly free, ``stem`` the dearest); the default prices the
    dearest. NoiseTunnel multiplies Integrated Gradients by ``noise_tunnel_samples``.
    """
    if method not in METHODS:
        raise UserError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    rel = _RELATIVE_COST[(method, _check_stage(stage) if method == "gradcam" else "")]
    if method == "ig":
        rel *= ig_steps * max(1, noise_tunnel_samples)
    return rel * _gmacs(arch, image_size) * _seconds_per_gmac()
