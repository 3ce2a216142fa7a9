"""Deep Feature Factorization (Collins et al., 2018): a stage's activations as k concepts.

The (C, h*w) activations of a stage, taken from the analysis's stored pass (no new
forward), each channel shifted by its minimum, are factorised by non-negative matrix
factorisation (NMF) into ``W`` (C, k) and ``H`` (k, h*w): k concept embeddings and, for
each, where on the photo it is. Everything follows pytorch-grad-cam's
``DeepFeatureFactorization``: scikit-learn's NMF with random initialisation (``seed``,
0 there) and its coordinate-descent solver, written out here in numpy (the same updates,
so the same concepts), the channel minima added back to the embeddings.

What the concepts say about classes:

* at ``layer4`` the embedding is a feature vector of the classifier's input, so
  ``fc(embedding)``, softmaxed, names each concept's top 2 classes (pytorch-grad-cam's
  ``run_dff_on_image``). At earlier stages an embedding has the stage's channels (64 to
  1024), which ``fc`` cannot take: concepts there name no classes;
* at every stage, each concept's contribution to the explained score (logit(target), or
  logit(target) - logit(versus)): sum over positions of H_j(p) * (W_j . dscore/dA(p)),
  the first-order part of the score the concept's share of the activations carries. At
  ``layer4`` the head is linear, so this is exact (the gradient is fc's row, no backward);
  elsewhere it takes the analysis's shared backward, as the CAM family does.

As a registry method (``dff``, a layer method) the map at a stage is the map of the
concept contributing most to the explained class, so it is class-specific and can be
contrastive; a stage where no concept adds to the score gives an all-zero map.
:func:`concepts` returns all k concepts for the app, and :func:`concept_overlay` draws
them as one colour-coded image with a legend.
"""

from __future__ import annotations

import colorsys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..core.cam import finish_cam
from ..core.errors import UserError
from ..core.render import check_opacity
from .analysis import Analysis
from .classes import class_label
from .gradcam import finish_layer_map
from .methods import Method, MethodCall, check_range, register
from .results import Prediction

__all__ = ["CONCEPTS", "DFF", "Concept", "DFFResult", "concept_overlay", "concepts", "factorize", "nmf"]

CONCEPTS = 5  # concepts by default, pytorch-grad-cam's run_dff_on_image default
CONCEPTS_RANGE = (2, 16)
TOP_CLASSES = 2  # classes named per concept
# scikit-learn's NMF defaults, which pytorch-grad-cam keeps.
NMF_TOL = 1e-4
NMF_MAX_ITER = 200
# OpenBLAS runs a matrix product of at most this many multiply-adds on the calling thread.
_ONE_THREAD_MACS = 4 * 65536
# Forward passes per map on ResNet-50 at 224 px (2 threads, AMD EPYC, fastest of 10 interleaved runs):
# the NMF alone at layer4 (5 concepts, ~110 iterations); earlier stages have more positions, need the
# full 200 iterations, and add the shared backward from the stage (paid once per class by all methods).
_COST = {"stem": 7.5, "layer1": 8.0, "layer2": 5.5, "layer3": 2.0, "layer4": 0.35}


@dataclass(frozen=True, eq=False)
class Concept:
    """One concept of a stage: where it is, what it stands for, how much it adds to the explained class."""

    heatmap: np.ndarray  # (H, W) float32 in [0, 1] on the crop: where the concept is
    raw: np.ndarray  # (h, w) float32: the NMF's weights of the concept at the stage's positions
    classes: tuple[Prediction, ...]  # the top classes of its embedding through fc (layer4 only, else empty)
    contribution: float  # its first-order part of the explained score (see the module docstring)


@dataclass(frozen=True, eq=False)
class DFFResult:
    """The k concepts of one stage, in NMF order."""

    stage: str
    seed: int
    target: int  # the explained class (contributions are to its score)
    versus: int | None
    concepts: tuple[Concept, ...]
    embeddings: np.ndarray  # (k, C) float32: each concept's activation vector, channel minima added back
    error: float  # ||A - offset - W H|| / ||A - offset||: what the k concepts leave out
    seconds: float

    @property
    def best(self) -> int:
        """The index of the concept contributing most to the explained score (the registry's map)."""
        return int(np.argmax([c.contribution for c in self.concepts]))


def _check_k(k: int, channels: int) -> int:
    k = check_range(value=k, low=CONCEPTS_RANGE[0], high=CONCEPTS_RANGE[1], what="concepts", method="DFF")
    if k > channels:
        raise UserError(f"DFF cannot find {k} concepts in a stage of {channels} channels: ask for at most {channels}.")
    return k


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in slices of the inner dimension small enough for OpenBLAS to keep each on one thread.

    Its threads cost more than these thin products (k columns): 64 x 3136 by 3136 x 5 took 16 ms
    threaded on a busy 2-core machine, 0.05 ms in slices."""
    step = max(1, _ONE_THREAD_MACS // (a.shape[0] * b.shape[1]))
    out = a[:, :step] @ b[:step]
    for i in range(step, a.shape[1], step):
        out += a[:, i : i + step] @ b[i : i + step]
    return out


def _sweep(x: np.ndarray, w: np.ndarray, ht: np.ndarray) -> float:
    """One pass of coordinate descent over the columns of ``w`` (in place) for x ~ w ht^T; the
    projected gradient's L1 norm before the pass. scikit-learn's ``_update_cdnmf_fast``, a column at a time."""
    hht = _matmul(ht.T, ht)  # (k, k)
    xht = _matmul(x, ht)  # (n, k)
    violation = 0.0
    for t in range(w.shape[1]):
        grad = w @ hht[t] - xht[:, t]  # (n,): the rows are independent, so one column is one vector step
        col = w[:, t]
        violation += float(np.abs(np.where(col == 0, np.minimum(grad, 0.0), grad)).sum())
        if hht[t, t] != 0:
            w[:, t] = np.maximum(col - grad / hht[t, t], 0.0)
    return violation


def nmf(x: np.ndarray, *, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``x`` (n, m), non-negative, as ``w`` (n, k) @ ``h`` (k, m), both non-negative; and the iterations run.

    scikit-learn's ``NMF(n_components=k, init="random", random_state=seed)`` (Frobenius loss,
    coordinate descent, tolerance 1e-4, at most 200 iterations), in float32 as it runs on float32 activations.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.RandomState(seed)
    avg = np.sqrt(x.mean() / k)
    h = np.abs(avg * rng.standard_normal(size=(k, x.shape[1])).astype(np.float32))  # drawn first, as scikit-learn does
    w = np.abs(avg * rng.standard_normal(size=(x.shape[0], k)).astype(np.float32))
    ht = np.ascontiguousarray(h.T)
    first = 0.0
    for step in range(1, NMF_MAX_ITER + 1):
        violation = _sweep(x, w, ht) + _sweep(x.T, ht, w)
        first = violation if step == 1 else first
        if first == 0 or violation / first <= NMF_TOL:
            break
    return w, ht.T, step


def _nmf_of(activations: Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(1, C, h, w) ``activations`` less each channel's minimum, factorised: W (C, k), the minima (C, 1),
    the maps H (k, h, w) and ||A - minima - W H|| / ||A - minima||. ``k`` is checked first."""
    _, c, h, w = activations.shape
    k = _check_k(k, c)
    a = torch.nan_to_num(activations.detach()[0].float(), nan=0.0).reshape(c, h * w).cpu().numpy()  # (C, h*w)
    offset = a.min(axis=1, keepdims=True)  # (C, 1)
    shifted = a - offset
    wk, hk, _ = nmf(shifted, k=k, seed=seed)
    norm = float(np.linalg.norm(shifted))
    error = float(np.linalg.norm(shifted - wk @ hk)) / norm if norm > 0 else 0.0
    return wk, offset, hk.reshape(k, h, w), error


def factorize(*, activations: Tensor, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """A (1, C, h, w) stage output as k concepts: embeddings (C, k) with the channel minima added back,
    maps (k, h, w), and the relative error of the factorisation. ``k`` is checked (2 to 16, at most C)."""
    wk, offset, maps, error = _nmf_of(activations, k, seed)
    return wk + offset, maps, error


def _factorised(call: MethodCall, stage: str) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Embeddings (C, k), maps (k, h, w), error, and each concept's contribution to the explained
    score, sum_p H_j(p) (W_j . dscore/dA(p)), (k,), at ``stage`` for ``call``."""
    wk, offset, maps, error = _nmf_of(call.activations[stage], call.options["dff_concepts"], call.options["seed"])
    grad = call.stage_gradients([stage])[stage].detach()[0].float()  # (C, h, w)
    g = grad.reshape(grad.shape[0], -1).cpu().numpy()  # (C, h*w)
    contributions = np.einsum("kp,ck,cp->k", maps.reshape(len(maps), -1), wk, g)
    return wk + offset, maps, error, contributions


def _top_classes(call: MethodCall, embeddings: np.ndarray, categories: tuple[str, ...]) -> list[tuple[Prediction, ...]]:
    """Each concept's top classes: fc on its embedding, softmaxed (pytorch-grad-cam's ``run_dff_on_image``)."""
    fc = call.model.fc
    with torch.inference_mode():
        logits = fc(torch.from_numpy(np.float32(embeddings.T)).to(fc.weight.device, fc.weight.dtype))  # (k, classes)
        probs = torch.softmax(logits.float(), dim=1)
        top = torch.topk(probs, min(TOP_CLASSES, probs.shape[1]), dim=1)
    return [
        tuple(Prediction(int(i), class_label(categories, int(i)), float(p)) for i, p in zip(ids, ps, strict=True))
        for ids, ps in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def _dff(call: MethodCall) -> dict[str, Tensor]:
    maps_out = {}
    for stage in call.stages:
        _, maps, _, contributions = _factorised(call, stage)
        best = int(np.argmax(contributions))
        chosen = maps[best] if contributions[best] > 0 else np.zeros_like(maps[best])  # no concept for the class
        maps_out[stage] = torch.from_numpy(np.float32(chosen))[None, None]  # (1, 1, h, w)
    return maps_out


def concepts(
    *, analysis: Analysis, stage: str = "layer4", k: int = CONCEPTS, seed: int = 0, target: int | None = None,
    versus: int | None = None,
) -> DFFResult:  # fmt: skip
    """The ``k`` concepts of ``stage`` in ``analysis`` (an :class:`~resnet_demo.explain.Analysis`), from its stored pass.

    ``target`` (None: the top-1) and ``versus`` set the score the contributions are to, as
    for :meth:`~resnet_demo.explain.Analysis.attribution`. A bad stage, ``k`` or class is a
    :class:`~resnet_demo.core.errors.UserError`, raised before any work.
    """
    t0 = time.perf_counter()
    call = analysis.method_call(
        method="dff", stages=(stage,), target=target, versus=versus, dff_concepts=int(k), seed=int(seed)
    )
    _check_k(call.options["dff_concepts"], call.activations[stage].shape[1])
    embeddings, maps, error, contributions = _factorised(call, stage)
    named = stage == "layer4" and embeddings.shape[0] == call.model.fc.in_features
    classes = _top_classes(call, embeddings, analysis.categories) if named else [()] * len(maps)
    size = analysis.crop.size[::-1]  # (H, W)
    found = tuple(
        Concept(
            heatmap=finish_cam(cam=torch.from_numpy(np.float32(m))[None, None], size=size).heatmap,
            raw=np.float32(m),
            classes=classes[j],
            contribution=float(contributions[j]),
        )
        for j, m in enumerate(maps)
    )
    return DFFResult(
        stage=stage, seed=int(seed), target=target, versus=versus, concepts=found,
        embeddings=np.float32(embeddings.T), error=error, seconds=time.perf_counter() - t0,
    )  # fmt: skip


def concept_colours(k: int) -> list[tuple[int, int, int]]:
    """``k`` distinct colours, hues evenly spaced around the wheel (as pytorch-grad-cam's gist_rainbow)."""
    return [tuple(round(255 * v) for v in colorsys.hsv_to_rgb(j / k * 0.85, 1.0, 1.0)) for j in range(k)]


def concept_overlay(*, result: DFFResult, image: Image.Image, opacity: float = 0.5) -> tuple[Image.Image, list]:
    """The concepts drawn over ``image`` (the crop the model saw), and the legend: [(colour, text)].

    Each pixel takes the colour of its strongest concept, as bright as that concept is there
    (pytorch-grad-cam's ``show_factorization_on_image``), blended over the image with ``opacity``.
    A legend entry is ``(r, g, b)`` and "concept 1: class A 42%, class B 21%" (the classes at layer4 only).
    """
    opacity = check_opacity(opacity)
    image = image.convert("RGB")
    colours = concept_colours(len(result.concepts))
    maps = np.stack([np.asarray(Image.fromarray(c.heatmap).resize(image.size, Image.Resampling.BILINEAR))
                     for c in result.concepts])  # (k, H, W)  # fmt: skip
    strongest = maps.argmax(axis=0)  # (H, W)
    palette = np.asarray(colours, dtype=np.float32)  # (k, 3)
    painted = palette[strongest] * maps.max(axis=0)[..., None]  # (H, W, 3)
    blended = (1 - opacity) * np.asarray(image, dtype=np.float32) + opacity * painted
    legend = []
    for j, (concept, colour) in enumerate(zip(result.concepts, colours, strict=True)):
        named = ", ".join(f"{p.label} {p.prob:.0%}" for p in concept.classes)
        legend.append((colour, f"concept {j + 1}: {named}" if named else f"concept {j + 1}"))
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)), legend


def _cost(stage: str, options: Mapping[str, int]) -> float:
    check_range(value=options["dff_concepts"], low=CONCEPTS_RANGE[0], high=CONCEPTS_RANGE[1], what="concepts",
                method="DFF")  # fmt: skip
    return _COST[stage]


DFF = register(
    Method(
        name="dff",
        label="Deep Feature Factorization",
        space="layer",
        cost=_cost,
        compute=_dff,
        finish=finish_layer_map,
        options={"dff_concepts": CONCEPTS, "seed": 0},
        question="what",
    )
)
