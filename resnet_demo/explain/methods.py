"""The method registry: every explanation method is one :class:`Method` entry.

An entry says what the method is called, whether its maps sit at a stage ("layer") or
on the pixels ("input"), what one map costs in forward passes of the same network,
which options it takes (with their defaults; their values also key the cache), how to
compute raw maps and how to turn a raw map into a [0, 1] heat map; and whether it is
cheap (arithmetic on the stored pass plus at most the one shared backward), which
stages it supports, and whether it depends on the class (only then can it be
contrastive). :meth:`~resnet_demo.explain.Analysis.attribution` and
:func:`~resnet_demo.explain.method_cost` read everything from the entry, so adding a
method is one ``register(Method(...))`` call. The built-in entries live in
:mod:`.cams` (the CAM family), :mod:`.score_cams` (Score-CAM, Ablation-CAM) and
:mod:`.captum_methods` (Guided Grad-CAM, Integrated Gradients, Occlusion), :mod:`.lrp` and
:mod:`.crp` (relevance and its concepts), :mod:`.smoothgrad`, :mod:`.rise` and :mod:`.dff`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from ..core.errors import InvalidValue, UserError
from ..core.model import STAGES, ResNet, check_stage
from ..core.weights import Preprocessing
from .gradcam import GradientCache
from .network import input_of
from .results import FinishedMap

__all__ = [
    "METHODS",
    "REGISTRY",
    "FinishedMap",
    "Method",
    "MethodCall",
    "QUICK_FORWARDS",
    "QUESTIONS",
    "Question",
    "cheap_methods",
    "check_range",
    "get_method",
    "grouped_methods",
    "quick_methods",
    "method_options",
    "no_progress",
    "register",
    "unregister",
]


Question = Literal["where", "what", "which pixels"]
# What each kind of map answers, in the order menus group them.
QUESTIONS: dict[Question, str] = {
    "where": "which region of the photo a stage used for the class (the CAM family: one backward, or forwards per channel)",
    "what": "which concepts (channels or factors of a stage) carry the class, and where each one is",
    "which pixels": "which pixels the score depends on (relevance, gradients, perturbations: one backward to thousands of forwards)",
}


def no_progress(fraction: float) -> None:
    """The default progress callback: nobody is watching."""


@dataclass(frozen=True, eq=False)
class MethodCall:
    """What a method's ``compute`` is given: the network, the image, the stored pass and the request."""

    model: ResNet  # the shared inference copy: read it, never hook it (hooks go on a shell of it)
    tensor: Tensor  # (1, 3, H, W) normalised, as preprocessed; ``image`` is the model's layout of it
    activations: Mapping[str, Tensor]  # stage -> its (1, C, h, w) output from the analysis's forward
    preprocessing: Preprocessing  # mean and std, e.g. for a black baseline
    stages: tuple[str, ...]  # the stages asked for; ("input",) for input-space methods
    target: int  # the class to explain
    options: Mapping[str, int]  # the method's options, defaults filled in
    versus: int | None = None  # a contrast class: explain logit(target) - logit(versus) ("why A and not B")
    # stages -> d score / d activation, (1, C, h, w) each: shared by every method of the
    # analysis and cached, so the CAM family pays for one backward in all (see .gradcam).
    gradients: Callable[[Sequence[str]], dict[str, Tensor]] | None = None
    progress: Callable[[float], None] = no_progress  # the fraction done, for methods that take a while

    def stage_gradients(self, stages: Sequence[str]) -> dict[str, Tensor]:
        """d score / d A at ``stages``, from :attr:`gradients` (or a private computation when there is none)."""
        if self.gradients is not None:
            return self.gradients(stages)
        cache = GradientCache(model=self.model, activations=self.activations)
        return cache.get(stages, target=self.target, versus=self.versus)

    @functools.cached_property
    def image(self) -> Tensor:
        """The input on the model's device, ``channels_last``: made on first use (Grad-CAM never needs it)."""
        return input_of(self.model, self.tensor)


@dataclass(frozen=True)
class Method:
    """One explanation method: everything the engine needs to compute, cache and price its maps."""

    name: str  # the key: "gradcam"
    label: str  # what people read: "Grad-CAM"
    space: Literal["layer", "input"]  # "layer": a map per stage; "input": one map on the pixels
    # Seconds for one map, in units of one forward pass of the same network at the same size:
    # (stage or "input", options) -> relative cost. Measured with `python -m resnet_demo bench --methods`.
    cost: Callable[[str, Mapping[str, int]], float]
    # The raw maps, stage -> tensor: at least every stage asked for. Maps of stages not asked
    # for (computed on the way) are kept, and served when they are asked for later.
    compute: Callable[[MethodCall], dict[str, Tensor]]
    # A raw map and the crop's (H, W) -> the finished map.
    finish: Callable[[Tensor, tuple[int, int]], FinishedMap]
    # Option name -> default. Requests differing in an option are cached apart.
    options: Mapping[str, int] = field(default_factory=dict)
    # True: tensor arithmetic on the stored pass plus at most one shared backward (the CAM
    # family); such maps are cheap enough to compute for every method and stage at once.
    cheap: bool = False
    # The stages a layer method supports, None: every stage (ignored by input methods).
    stages: tuple[str, ...] | None = None
    # False: the map ignores the class (Eigen-CAM), so it has no contrastive version.
    class_specific: bool = True
    # The question the map answers, for grouping menus (see QUESTIONS); None: from ``space``,
    # "where" for a map at a stage, "which pixels" for a map on the pixels.
    question: Question | None = None

    @property
    def answers(self) -> Question:
        """The question this method's map answers: "where", "what" or "which pixels"."""
        return self.question or ("where" if self.space == "layer" else "which pixels")

    @property
    def supported_stages(self) -> tuple[str, ...]:
        """The stages a layer method makes maps at, in network order."""
        return self.stages or STAGES

    def check_stage(self, stage: str) -> str:
        """``stage`` itself if this layer method supports it; else a :class:`UserError`."""
        if check_stage(stage) not in self.supported_stages:
            raise UserError(f"{self.label} works at {', '.join(self.supported_stages)} only, not at {stage}.")
        return stage


REGISTRY: dict[str, Method] = {}  # name -> entry, in the order registered (the order menus show)
_LOCK = threading.Lock()


def register(method: Method) -> Method:
    """Add ``method`` to the registry and return it; a name already taken is a ``ValueError``."""
    with _LOCK:
        if method.name in REGISTRY:
            raise ValueError(f"An explanation method named {method.name!r} is registered already.")
        REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove the method called ``name`` from the registry and return it."""
    with _LOCK:
        return REGISTRY.pop(name)


def get_method(name: str) -> Method:
    """The entry called ``name``; an unknown name is a :class:`UserError` listing the known ones."""
    method = REGISTRY.get(name) if isinstance(name, str) else None  # a request may send any JSON value
    if method is None:
        raise UserError(f"Unknown method {name!r:.40}; choose one of {', '.join(REGISTRY)}.")
    return method


def grouped_methods() -> list[str]:
    """Every method's name, grouped by the question it answers (:data:`QUESTIONS`' order), registry order within."""
    methods = list(REGISTRY.values())
    return [m.name for q in QUESTIONS for m in methods if m.answers == q]


def check_range(*, value: int, low: int, high: int, what: str, method: str) -> int:
    """``value`` if ``low <= value <= high``; else an :class:`~resnet_demo.core.errors.InvalidValue` saying so."""
    if not low <= value <= high:
        raise InvalidValue(f"{method} takes {low} to {high} {what}, not {value}.")
    return value


# A map that costs at most this many forward passes at every stage it supports (default options)
# joins the cheap ones in the side-by-side gallery and the faithfulness ranking.
QUICK_FORWARDS = 10.0


def quick_methods() -> list[str]:
    """Names of the methods quick enough to compute side by side: the cheap ones, and those whose map
    costs at most :data:`QUICK_FORWARDS` forwards at every stage (LRP, CRP, DFF, Guided Grad-CAM), in
    registry order."""
    out = []
    for name, m in list(REGISTRY.items()):
        options = dict(m.options)
        stages = ("input",) if m.space == "input" else m.supported_stages
        if m.cheap or max(m.cost(s, options) for s in stages) <= QUICK_FORWARDS:
            out.append(name)
    return out


def cheap_methods() -> list[str]:
    """Names of the cheap methods (see :attr:`Method.cheap`), in registry (menu) order."""
    return [name for name, method in list(REGISTRY.items()) if method.cheap]


def method_options(method: Method, given: Mapping[str, int]) -> dict[str, int]:
    """``method``'s options: its defaults, overridden by ``given``.

    Options that belong to other methods are ignored, so one request can be sent to any
    method (the command line passes ``noise_tunnel_samples`` whatever the method); a name
    no registered method knows is a ``TypeError``, like any unknown keyword argument.
    """
    known = {name for m in list(REGISTRY.values()) for name in m.options}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)}; the methods take {', '.join(sorted(known))}.")
    return {name: int(given.get(name, default)) for name, default in method.options.items()}


class _Labels(Mapping[str, str]):
    """The registry as name -> label, read live: what menus and messages list."""

    def __getitem__(self, name: str) -> str:
        return REGISTRY[name].label

    def __iter__(self) -> Iterator[str]:
        return iter(list(REGISTRY))

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


METHODS: Mapping[str, str] = _Labels()
