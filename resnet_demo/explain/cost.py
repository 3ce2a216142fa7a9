"""What a map will cost here: a method's relative cost (from its registry entry) times the
speed of this machine's forward passes, to warn before slow methods run."""

from __future__ import annotations

import math
import threading
import time

import torch

from ..core.errors import UserError
from ..core.weights import weights_spec
from .methods import get_method, method_options

__all__ = ["check_budget", "gmacs", "method_cost", "note_forward"]

# A forward pass takes this many times (GMACs x the probe's seconds per GMAC): measured on
# a quiet 2-core AMD EPYC (0.116 s for ResNet-50 against a probe of 0.0137 s per GMAC).
_FORWARD_PER_PROBE_GMAC = 2.06

_cost_lock = threading.Lock()
_probe_s_per_gmac: float | None = None
_forward_s_per_gmac: float | None = None  # from real forward passes of analyze(), when there were some


def note_forward(seconds: float, gmacs: float) -> None:
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


def gmacs(arch: str, image_size: int) -> float:
    """Multiply-accumulates of one forward pass of ``arch`` at ``image_size`` pixels, in billions."""
    return weights_spec(arch=arch, weights="imagenet-v2").published["gmacs"] * (image_size / 224) ** 2


def method_cost(*, method: str, arch: str, stage: str | None = None, image_size: int = 224, **options: int) -> float:
    """Expected seconds for one map of ``method`` on this machine, to warn before slow ones.

    The method's measured relative cost (its registry entry's ``cost``) times the speed
    of this machine's forward passes (taken from the analyses run so far, else from a
    quick probe). A layer method's cost depends on the stage (Grad-CAM's ``layer4`` is
    nearly free, ``stem`` the dearest); ``stage`` None prices the dearest stage the
    method supports, and a stage it does not support is a :class:`UserError`.
    ``options`` are the method's (e.g. ``ig_steps``; ``noise_tunnel_samples``
    multiplies Integrated Gradients; ``channels`` sets Score-CAM's and Ablation-CAM's).
    """
    entry = get_method(method)
    opts = method_options(entry, options)
    if entry.space == "input":
        relative = entry.cost("input", opts)
    elif stage is None:
        relative = max(entry.cost(s, opts) for s in entry.supported_stages)
    else:
        relative = entry.cost(entry.check_stage(stage), opts)
    return relative * gmacs(arch, image_size) * _seconds_per_gmac()


def check_budget(*, seconds: float, budget_s: float, what: str) -> None:
    """Refuse, before any work, what is expected to take more than ``budget_s`` seconds here.

    ``seconds`` is the expectation (:func:`method_cost` and the like), ``what`` names the work
    for the message ("Score-CAM at layer3"). ``budget_s`` 0 is no limit. Raises
    :class:`~resnet_demo.core.errors.UserError` with the expected time, the limit and a way out.
    """
    if budget_s > 0 and seconds > budget_s:
        raise UserError(
            f"{what} would take about {seconds:.0f} s on this server, over its limit of {budget_s:.0f} s a request. "
            "Pick a quicker method or a later stage, or run the app on your own machine without the limit "
            "(python app.py --time-budget 0)."
        )
