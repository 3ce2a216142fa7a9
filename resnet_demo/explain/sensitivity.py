"""Does the map follow the decision or the photo: max-sensitivity (Yeh et al., NeurIPS 2019) and the
random-logit test (Sixt et al., ICML 2020).

*Max-sensitivity*: the photo (as the network takes it, normalised) gets ``n`` draws of
uniform noise in [-r, r] on every value, r = ``radius`` x the photo's range (max - min);
the map is recomputed for each perturbed photo, and the metric is the largest
||map - map'|| / ||map|| (Frobenius norms): lower is more robust. The noise comes from a
legacy ``numpy.random.RandomState(seed)``, one draw of (n, values), the stream Quantus
0.6 draws after ``np.random.seed(seed)``, so both see the same perturbations. The perturbed
photos go through the network in batches and every map is computed from its batch's
stored pass (no second forward per photo).

*Random logit*: the map of the same method and stage for another class, drawn as
Quantus draws it (``RandomState(seed).randint(0, classes - 1)`` into the classes other
than the explained one), and its similarity to the explained class's map: the structural
similarity (SSIM, 7 x 7 uniform windows, scikit-image's definition, data range the two
maps' joint range) or Spearman's rank correlation. Both maps are divided by their maximum
first. Lower is better: a map that stays the same for any class explains the photo, not
the decision. The other class's map is never contrastive.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError
from .analysis import Analysis
from .methods import MethodCall, get_method, method_options
from .network import input_of
from .results import Attribution
from .sanity import spearman

__all__ = [
    "MAX_SAMPLES",
    "SIMILARITIES",
    "check_radius",
    "check_samples",
    "check_similarity",
    "maps_for_inputs",
    "max_sensitivity",
    "other_class",
    "perturbed_inputs",
    "random_logit",
    "sensitivities",
    "similarity",
    "ssim",
]

MAX_SAMPLES = 64  # perturbed photos for max-sensitivity: each costs a forward and a map
SIMILARITIES = ("ssim", "spearman")
_WINDOW = 7  # scikit-image's default SSIM window


def check_samples(n: float) -> int:
    """``n`` as a whole number of perturbed photos from 1 to :data:`MAX_SAMPLES`, else a :class:`UserError`."""
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or not float(n).is_integer():
        raise UserError(f"The number of perturbed photos must be a whole number from 1 to {MAX_SAMPLES}.")
    if not 1 <= n <= MAX_SAMPLES:
        raise UserError(f"The number of perturbed photos must be from 1 to {MAX_SAMPLES}, not {int(n)}.")
    return int(n)


def check_radius(radius: float) -> float:
    """``radius`` (the noise's half-width as a fraction of the photo's range) in (0, 0.5], else a UserError."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius <= 0.5:
        raise UserError(
            f"The noise radius must be a fraction of the photo's range above 0 and at most 0.5, not {radius!r:.20}."
        )
    return float(radius)


def check_similarity(name: str) -> str:
    if name not in SIMILARITIES:
        raise UserError(f"Unknown similarity {name!r:.30}; choose one of {', '.join(SIMILARITIES)}.")
    return name


# ----------------------------------------------------------------------------- maps of other inputs


def maps_for_inputs(
    analysis: Analysis,
    images: torch.Tensor,
    *,
    method: str,
    stage: str,
    target: int,
    versus: int | None = None,
    options: Mapping[str, int] | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """The finished maps (N, H, W) of ``method`` at ``stage`` ("fusion": the maximum over its stages)
    for ``images`` (N, 3, H, W), normalised like the analysis's photo.

    The forwards are batched; each map is then computed from its image's stored stage outputs by the
    method's own ``compute``, on the analysis's shared inference copy (which the methods only read).
    """
    entry = get_method(method)
    opts = method_options(entry, dict(options or {}))
    if entry.space == "input":
        stages: tuple[str, ...] = ("input",)
    elif stage == "fusion":
        stages = entry.supported_stages
    else:
        stages = (entry.check_stage(stage),)
    net = analysis.model
    size = tuple(images.shape[-2:])
    found = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        with torch.inference_mode():
            _, acts = net.forward_stages(input_of(net, chunk))
        for i in range(chunk.shape[0]):
            call = MethodCall(
                net,
                chunk[i : i + 1].cpu(),
                {s: a[i : i + 1] for s, a in acts.items()},
                analysis.spec.preprocessing,
                stages,
                target,
                opts,
                versus=versus,
            )
            raw = entry.compute(call)
            found.append(np.maximum.reduce([entry.finish(raw[s], size)[0] for s in stages]))  # type: ignore[arg-type]
    return np.stack(found)


def _maps_like(analysis: Analysis, attribution: Attribution, images: torch.Tensor, options: Mapping[str, int] | None):
    return maps_for_inputs(
        analysis,
        images,
        method=attribution.method,
        stage=attribution.stage,
        target=attribution.target,
        versus=attribution.versus,
        options=options,
    )


# ----------------------------------------------------------------------------- max-sensitivity


def perturbed_inputs(image: torch.Tensor, *, n: int, radius: float, seed: int) -> torch.Tensor:
    """``n`` copies of ``image`` (1, C, H, W) with uniform noise in [-r, r], r = radius x its range. (n, C, H, W)"""
    x = image.detach().cpu().double()
    r = radius * float(x.max() - x.min())
    noise = np.random.RandomState(seed).uniform(low=-r, high=r, size=(n, x[0].numel()))
    return (x.reshape(1, -1) + torch.from_numpy(noise)).reshape(n, *x.shape[1:]).float()


def sensitivities(heatmap: np.ndarray, others: np.ndarray) -> np.ndarray:
    """||map - other|| / ||map|| for each of ``others`` (N, H, W): (N,); infinite for an all-zero map."""
    a = np.asarray(heatmap, dtype=np.float64).ravel()
    diff = np.linalg.norm(others.reshape(len(others), -1).astype(np.float64) - a, axis=1)
    norm = np.linalg.norm(a)
    return diff / norm if norm > 0 else np.full(len(others), np.inf)


def max_sensitivity(
    analysis: Analysis,
    *,
    attribution: Attribution,
    n: int = 10,
    radius: float = 0.05,
    seed: int = 0,
    options: Mapping[str, int] | None = None,
) -> float:
    """The largest relative change of ``attribution``'s map over ``n`` perturbed photos (module docstring)."""
    n, radius = check_samples(n), check_radius(radius)
    images = perturbed_inputs(analysis.prepared.tensor, n=n, radius=radius, seed=seed)
    return float(sensitivities(attribution.heatmap, _maps_like(analysis, attribution, images, options)).max())


# ----------------------------------------------------------------------------- random logit


def other_class(target: int, classes: int, *, seed: int) -> int:
    """A class other than ``target``, drawn as Quantus's RandomLogit draws it from ``seed``."""
    if classes < 2:
        raise UserError("The random-logit test needs a model with at least two classes.")
    index = int(np.random.RandomState(seed).randint(0, classes - 1, 1)[0])
    return index if index < target else index + 1  # skip the target: the others, in order


def _by_max(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    top = np.abs(a).max(initial=0.0)
    return a / top if top > 0 else a


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps (H, W) as scikit-image computes it with its defaults (7 x 7 uniform
    windows, sample covariances, K1 = 0.01, K2 = 0.03) and a data range of the two maps' joint max - min."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))[None, None]
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))[None, None]
    span = float(torch.cat([x.ravel(), y.ravel()]).max() - torch.cat([x.ravel(), y.ravel()]).min())
    if span == 0:
        return 1.0  # both maps the same constant
    # skimage averages over the windows that fit inside the map: a valid pooling.
    mean = lambda t: F.avg_pool2d(t, _WINDOW, stride=1)  # noqa: E731
    ux, uy = mean(x), mean(y)
    cov = _WINDOW**2 / (_WINDOW**2 - 1)
    vx, vy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def similarity(a: np.ndarray, b: np.ndarray, *, kind: str = "ssim") -> float:
    """SSIM or Spearman's correlation of two maps, each divided by its maximum first."""
    a, b = _by_max(a), _by_max(b)
    return ssim(a, b) if check_similarity(kind) == "ssim" else spearman(a, b)


def random_logit(
    analysis: Analysis,
    *,
    attribution: Attribution,
    seed: int = 0,
    kind: str = "ssim",
    options: Mapping[str, int] | None = None,
) -> tuple[float, int]:
    """The similarity of ``attribution``'s map to the map of a random other class, and that class."""
    check_similarity(kind)
    other = other_class(attribution.target, len(analysis.categories), seed=seed)
    opts = dict(options or {})
    if attribution.stage == "fusion":
        theirs = analysis.fusion(target=other, method=attribution.method, **opts)
    else:
        theirs = analysis.attribution(stage=attribution.stage, target=other, method=attribution.method, **opts)
    return similarity(attribution.heatmap, theirs.heatmap, kind=kind), other
