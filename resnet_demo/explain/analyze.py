"""The entry points: :func:`analyze` (one forward pass, kept as an :class:`Analysis`) and
:func:`predict` (top-k only), and the block statistics that pass collects."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ..core.devices import configure_threads
from ..core.images import ImageSource
from ..core.model import ARCH_DEPTHS, STAGES, ResNet, check_stage
from ..core.precision import resolve_precision
from ..core.weights import LoadedModel
from .analysis import Analysis
from .cost import gmacs, note_forward
from .gradcam import segment_backward, segment_forward
from .inputs import prepare
from .network import POSITION, device_of, inference_model, inference_pass, input_of
from .results import BlockStat, Prediction, Prepared, top_predictions

__all__ = ["analyze", "block_stats", "predict"]


def predict(
    *,
    image: ImageSource | Prepared,
    model: LoadedModel,
    topk: int = 5,
    compile: bool = False,
    precision: str = "float32",
) -> list[Prediction]:
    """Top-k classes of ``model`` only: the cheapest path (no intermediate outputs kept; see
    :func:`analyze` for the rest, and for ``precision``)."""
    configure_threads()
    prepared = prepare(image=image, preprocessing=model.spec.preprocessing)
    net = inference_model(model.model)
    dtype = resolve_precision(name=precision, device=device_of(net)).dtype
    with torch.inference_mode():
        if dtype != torch.float32:
            logits = _reduced_pass(model.model, prepared.tensor, dtype=dtype)[0]
        else:
            x = input_of(net, prepared.tensor)
            logits = inference_pass(net, x, compile=True)[0] if compile else net(x)
        probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return top_predictions(probs, model.spec.categories, topk)


def block_stats(model: ResNet, names: list[str], numbers: Tensor, acts: dict[str, Tensor]) -> list[BlockStat]:
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


def _forward_with_gradcam(
    model: ResNet, x: Tensor, grad_stages: list[str], stats: list[Tensor]
) -> tuple[Tensor, dict[str, Tensor], Callable[[], dict[str, Tensor]], int]:
    """The pass that records the gradients of the top class: inference mode up to the earliest of
    ``grad_stages``, autograd from there. Returns the logits, the activations, the ONE backward that
    serves every later stage (not yet run: the caller runs it now or keeps it for later) and the top class."""
    start = min(grad_stages, key=POSITION.__getitem__)
    with torch.inference_mode():  # nothing before ``start`` needs a gradient
        _, early = model.forward_stages(x, stop=start, stats=stats)
    on_the_way = [s for s in STAGES if POSITION[s] >= POSITION[start]]  # their maps come free
    logits, late = segment_forward(model, early[start], start=start, stats=stats)
    target = int(logits[0].argmax())

    def backward() -> dict[str, Tensor]:
        return segment_backward(model, logits, late, stages=on_the_way, target=target, versus=None)

    return logits.detach(), {**early, **{k: v.detach() for k, v in late.items()}}, backward, target


def _reduced_pass(model: ResNet, tensor: Tensor, *, dtype: torch.dtype) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The inference pass with the stages in ``dtype`` (bfloat16): logits, stage outputs, block statistics.

    The stage outputs come back in float32 for everything built on them; the head runs in
    float32 (the probabilities carry only layer4's rounding); the stem's output is float32's
    own, as every later gradient starts from it (one from a rounded activation moves the
    earlier stages' maps: see :mod:`resnet_demo.core.precision`).
    """
    low, net = inference_model(model, dtype=dtype), inference_model(model)
    stats: list[Tensor] = []
    with torch.inference_mode():
        _, rounded = low.forward_stages(input_of(low, tensor), stop="layer4", stats=stats)
        acts = {s: a.float() for s, a in rounded.items()}  # (1, C, h, w), channels_last kept
        acts["stem"] = net.forward_stages(input_of(net, tensor), stop="stem")[1]["stem"]
        logits = net.forward_head(acts["layer4"])
    return logits, acts, torch.stack(stats).float().view(-1, 3)


_Gradients = dict[str, Tensor] | Callable[[], dict[str, Tensor]] | None


def _pass(
    model: LoadedModel, net: ResNet, x: Tensor, *, grad_stages: list[str], defer_backward: bool,
    dtype: torch.dtype, compile: bool,
) -> tuple[Tensor, dict[str, Tensor], Tensor, _Gradients, int | None]:  # fmt: skip
    """The one pass of :func:`analyze`: logits, stage outputs, block statistics, and the gradients of
    the top class at ``grad_stages`` (or their backward, not yet run) with that class."""
    if grad_stages:
        stats: list[Tensor] = []
        logits, acts, backward, target = _forward_with_gradcam(net, x, grad_stages, stats)
        return logits, acts, torch.stack(stats).detach().view(-1, 3), backward if defer_backward else backward(), target
    if dtype != torch.float32:
        return (*_reduced_pass(model.model, x, dtype=dtype), None, None)
    with torch.inference_mode():
        return (*inference_pass(net, x, compile=compile), None, None)


def analyze(
    *,
    image: ImageSource | Prepared,
    model: LoadedModel,
    topk: int = 5,
    gradcam_stages: Iterable[str] = (),
    defer_backward: bool = False,
    compile: bool = False,
    precision: str = "float32",
) -> Analysis:
    """Load ``image``, run ``model`` on it once, and return an :class:`Analysis`.

    ``model`` is a loaded model (:func:`~resnet_demo.core.weights.shared_model`, or a
    fine-tuned or pruned one); callers load it, after reading the photo when they want a
    bad file reported before 100 MB of weights are read. The gradients
    of the top-1 class at ``gradcam_stages``, which every gradient method of the CAM
    family weighs, are computed in the same pass: the forward then records autograd
    from the earliest of them and one backward serves all, so asking for every stage
    up front is cheaper than asking one by one later. With ``defer_backward=True`` that one
    backward runs when a gradient is first asked, not before ``analyze`` returns: the top-k and
    the ``layer4`` maps (which need none) are ready a backward sooner, and the pass's autograd
    graph is held until then.
    ``compile=True`` runs the inference pass through ``torch.compile`` (about 15% faster
    on CPU, after a minute of compiling per model; not used with ``gradcam_stages``).
    ``precision`` (float32, bfloat16 or auto: see :mod:`resnet_demo.core.precision`) is the
    format of the forward; a pass that takes gradients up front (``gradcam_stages`` before
    layer4) runs in float32, and every gradient is float32's. :attr:`Analysis.precision` says
    which ran.
    Raises :class:`~resnet_demo.core.images.ImageError` or
    :class:`~resnet_demo.core.weights.WeightsError` (both :class:`UserError`) for bad input.
    """
    t0 = time.perf_counter()
    configure_threads()
    prepared = prepare(image=image, preprocessing=model.spec.preprocessing)
    net = inference_model(model.model)
    dtype = resolve_precision(name=precision, device=device_of(net)).dtype
    stages = [check_stage(s) for s in dict.fromkeys(gradcam_stages)]
    t1 = time.perf_counter()

    x = input_of(net, prepared.tensor)
    # layer4's gradient is a closed form (see .gradcam): only earlier stages need the autograd pass.
    grad_stages = [s for s in stages if s != "layer4"]
    if grad_stages:
        dtype = torch.float32  # the gradients' pass gives the prediction too
    logits, acts, numbers, grads, target = _pass(
        model, net, x, grad_stages=grad_stages, defer_backward=defer_backward, dtype=dtype, compile=compile
    )
    t2 = time.perf_counter()
    blocks = block_stats(net, net.block_names(), numbers, acts)
    t3 = time.perf_counter()
    timings = {
        **prepared.timings,
        "model": t1 - t0 - sum(prepared.timings.values()),
        "forward": t2 - t1,
        "block_stats": t3 - t2,
    }
    if not grad_stages and dtype == torch.float32 and model.spec.arch in ARCH_DEPTHS:
        note_forward(t2 - t1, gmacs(model.spec.arch, x.shape[-1]))
    return Analysis(
        loaded=model,
        model=net,
        prepared=prepared,
        logits=logits,
        acts=acts,
        blocks=blocks,
        topk=topk,
        timings=timings,
        gradients=grads,
        gradients_target=target,
        started=t0,
        precision="float32" if dtype == torch.float32 else "bfloat16",
    )
