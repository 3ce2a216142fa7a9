"""Layer-wise relevance propagation (LRP) with the ε-z⁺-flat rules, through the residual blocks.

LRP (Bach et al., 2015) hands the explained score down the network layer by layer, each
layer sharing the relevance of its outputs among its inputs by their contributions. The
rules are zennit's ``EpsilonPlusFlat`` composite on a canonised ResNet
(``zennit.torchvision.ResNetCanonizer``), written out:

* the network is canonised: every BatchNorm is folded into the convolution before it
  (:mod:`resnet_demo.core.fold`; the registry's model already is), and the residual sum
  is an explicit step of :meth:`~resnet_demo.core.model.Bottleneck.forward_parts`, which
  returns the branch F(x) and the shortcut apart;
* ``fc``, the dense layer: ε, with the layer's bias, so R_in = x w R / (z ± ε);
* every convolution but the first: z⁺, R_in = x W⁺ᵀ (R / (z⁺ ± ε)) with z⁺ = W⁺ x + b⁺:
  the positive weights' share, a positive bias taking its own part. Each of these
  convolutions reads a ReLU's (or the max pool's) output, so x ≥ 0 and zennit's second
  term (x⁻ through W⁻) is zero;
* ``conv1``, the first layer: flat, every input of a window sharing alike;
* the residual sum and the average pool: in proportion to their inputs,
  R_i = x_i R / (Σ x ± ε) (zennit's ``Norm``), so a block hands on exactly what it
  received, split between the shortcut and F(x) by what each added;
* ReLUs pass relevance through; the max pool gives each output's relevance to the input
  that won its window (the gradient, as zennit leaves it).

ε is zennit's 1e-6 everywhere. With ``versus`` the explained score is
logit(target) - logit(versus): one dense output with weights w_target - w_versus.

It is one forward and one backward of relevance, computed explicitly rather than through
autograd: the forward runs a per-call shell of the network (:func:`resnet_demo.core.shell.shell`)
whose convolutions also keep their input and z⁺; the backward is one transposed
convolution per layer. Every rule is linear in the relevance it is given, so the backward
takes a batch of relevances at once: :mod:`.crp` sends one per channel of a stage.

The rules themselves are in :mod:`.lrp_rules`. What the biases and the stabilisers absorb
is counted on the way down (:class:`Conservation`): "conserved" means up to what they took.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.cancel import check_cancelled
from ..core.model import STAGES, BlockOutput, ResNet
from ..core.shell import shell
from .gradcam import score_of
from .lrp_rules import EPSILON, BlockFactors, IndexedMaxPool, Ledger, ZPlusConv, flat, stabilised
from .methods import FinishedMap, Method, MethodCall, no_progress, register
from .network import POSITION

__all__ = [
    "EPSILON",
    "LRP",
    "POINTS",
    "BlockRelevance",
    "Conservation",
    "Relevance",
    "RelevancePass",
    "finish_relevance_map",
    "relevance",
    "relevance_conservation",
]

# Where the conservation report sums the relevance, from the score down: the dense layer's
# input, each stage's input (layer1's is the stem's output), and the pixels.
POINTS: tuple[str, ...] = ("fc", "layer4", "layer3", "layer2", "layer1", "input")


@dataclass(frozen=True)
class BlockRelevance:
    """What one residual sum received and handed on (every tensor (B, C, h, w))."""

    name: str  # "layer3.0"
    received: Tensor  # at the sum's output (the block's output: the ReLU passes it)
    residual: Tensor  # handed to the branch F(x)
    shortcut: Tensor  # handed to the shortcut (x, or its projection)


@dataclass(frozen=True)
class Conservation:
    """Where the explained score's relevance went, as shares of the score.

    At every point of :data:`POINTS` (the dense layer's input, each stage's input, the
    pixels): the relevance summed there, and what the biases and the stabilisers took
    between the score and there. The three add up to 1 at every point, up to rounding:
    nothing else leaks.
    """

    score: float  # the explained score: logit(target), or logit(target) - logit(versus)
    relevance: dict[str, float]  # point -> Σ relevance there / score
    biases: dict[str, float]  # point -> what biases took above it / score
    stabilisers: dict[str, float]  # point -> what the ε terms took above it / score

    def to_json(self) -> dict[str, Any]:
        """Plain floats, for a JSON summary."""
        return {
            "score": self.score,
            "points": {
                p: {"relevance": self.relevance[p], "biases": self.biases[p], "stabilisers": self.stabilisers[p]}
                for p in self.relevance
            },
        }


class RelevancePass:
    """One forward of ``model`` on ``image`` that keeps what the rules need; then relevance down from any stage.

    ``model`` is a folded ResNet (:func:`resnet_demo.core.fold.fold_batchnorm`; the
    analysis's model is one). It is only read: the forward runs a shell of it.
    """

    def __init__(self, model: ResNet, image: Tensor) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError("LRP needs BatchNorm folded into the convolutions: pass fold_batchnorm(model).")
        self.model = model
        convs = {n: ZPlusConv(m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != "conv1"}
        self._pool = IndexedMaxPool(model.maxpool)
        self._shell = shell(model, replace={**convs, "maxpool": self._pool}).set_inplace(False)
        # The sums stay out of place (their two inputs must survive, for the split); the ReLUs need not:
        # each overwrites a convolution's output that no rule reads.
        for m in self._shell.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True
        self._image_size = tuple(image.shape[-2:])
        self.blocks: list[BlockOutput] = []
        with torch.inference_mode(), torch.autocast(device_type=image.device.type, enabled=False):
            logits, self.outputs = self._shell.forward_stages(image, blocks=self.blocks)
        assert logits is not None
        self.logits = logits  # (1, classes)
        self._blocks = {b.name: b for b in self.blocks}
        self._factors_of: dict[str, BlockFactors] = {}

    def dense(self, *, target: int, versus: int | None, ledger: Ledger | None = None) -> tuple[Tensor, Tensor]:
        """The score, and its relevance at ``fc``'s input (1, C), by ε; the score is its own relevance."""
        fc = self.model.fc
        weight, bias = fc.weight[target], None if fc.bias is None else fc.bias[target]
        if versus is not None:
            weight = weight - fc.weight[versus]
            bias = None if bias is None else bias - fc.bias[versus]
        with torch.inference_mode():
            pooled = self.outputs["layer4"].mean(dim=(2, 3))  # (1, C): what the average pool gave fc
            score = score_of(self.logits, target, versus)  # (1,)
            z = (pooled * weight).sum(dim=1) + (0.0 if bias is None else bias)  # the score, from fc's input
            denominator = stabilised(z)
            scaled = score / denominator  # (1,)
            if ledger is not None:
                ledger.take(biases=0.0 if bias is None else scaled * bias, stabilisers=scaled * (denominator - z))
            return score[0], pooled * weight * scaled[:, None]

    def unpool(self, r: Tensor, ledger: Ledger | None = None) -> Tensor:
        """(1, C) relevance at ``fc``'s input -> (1, C, h, w) at layer4's output, in proportion to the activations."""
        with torch.inference_mode():
            act = self.outputs["layer4"]  # (1, C, h, w)
            pooled = act.mean(dim=(2, 3))
            scaled = r / (pooled + EPSILON)  # a mean of a ReLU's outputs: >= 0
            if ledger is not None:
                ledger.take(stabilisers=EPSILON * scaled.sum())
            h, w = act.shape[-2:]
            return act * (scaled / (h * w))[:, :, None, None]

    def down(
        self,
        r: Tensor,
        *,
        start: str,
        stop: str = "input",
        ledger: Ledger | None = None,
        at: dict[str, Tensor] | None = None,
        blocks: list[BlockRelevance] | None = None,
    ) -> Tensor:
        """Hand (B, C, h, w) relevance at ``start``'s output down to ``stop``'s output ("input": the pixels).

        ``at`` collects the relevance at the output of each stage passed (``start``
        included, ``stop`` not); ``blocks`` what every residual sum received and handed on.
        """
        with torch.inference_mode(), torch.autocast(device_type=r.device.type, enabled=False):
            for name in reversed([s for s in STAGES[1:] if POSITION[stop] < POSITION[s] <= POSITION[start]]):
                check_cancelled()
                if at is not None:
                    at[name] = r
                layer = self._shell.stages[name]
                for i in reversed(range(len(layer))):
                    r = self._block(layer[i], f"{name}.{i}", r, ledger, blocks)
            if stop != "input":
                return r
            if at is not None:
                at["stem"] = r
            r = self._pool.relevance(r)  # the ReLU before it passes relevance as it is
            return flat(self.model.conv1, r, self._image_size, ledger)

    def _factors(self, name: str, block: nn.Module) -> BlockFactors:
        """A block's rules as factors of the relevance (see :class:`BlockFactors`), made on first use."""
        found = self._factors_of.get(name)
        if found is None:
            parts = self._blocks[name]
            total = stabilised(parts.residual + parts.shortcut)  # the sum before the ReLU, moved from 0
            to_branch, to_shortcut = parts.residual / total, parts.shortcut / total
            ds = None if block.downsample is None else block.downsample[0]
            found = self._factors_of[name] = BlockFactors(
                to_branch=to_branch,
                to_shortcut=to_shortcut,
                conv3=to_branch / block.conv3.denominator,
                conv2=block.conv3.input / block.conv2.denominator,
                conv1=block.conv2.input / block.conv1.denominator,
                shortcut=to_shortcut if ds is None else to_shortcut / ds.denominator,
            )
        return found

    def _block(
        self, block: nn.Module, name: str, r: Tensor, ledger: Ledger | None, blocks: list[BlockRelevance] | None
    ) -> Tensor:
        """A bottleneck's relevance, output -> input: the sum split by what each side added, then z⁺ through
        each side's convolutions, every step's elementwise factors premultiplied (:class:`BlockFactors`)."""
        f = self._factors(name, block)
        ds = None if block.downsample is None else block.downsample[0]
        if ledger is not None or blocks is not None:
            residual, shortcut = r * f.to_branch, r * f.to_shortcut
            if ledger is not None:
                ledger.take(stabilisers=(r - residual - shortcut).sum())  # what the sum's ε kept
            if blocks is not None:
                blocks.append(BlockRelevance(name, r, residual, shortcut))
        # z⁺ at a convolution: R_in = x W⁺ᵀ s, with s = R_out / (z⁺ + ε); a ReLU between two convolutions
        # passes R = x W⁺ᵀ s on, so the next s is (W⁺ᵀ s) x / (z⁺ + ε): one product with a stored factor.
        grad = r * f.conv3  # s at conv3
        for conv, factor in ((block.conv3, f.conv2), (block.conv2, f.conv1)):
            grad = conv.back(grad, ledger) * factor
        grad = block.conv1.back(grad, ledger)  # W⁺ᵀ s at the block's input, from the branch
        if ds is None:
            return block.conv1.input * grad + r * f.shortcut
        return block.conv1.input * (grad + ds.back(r * f.shortcut, ledger))


@dataclass(frozen=True, eq=False)
class Relevance:
    """LRP of one score: the pixels' relevance and where the rest went."""

    pixels: Tensor  # (1, 3, H, W): the relevance of every input value (alike over the colours: flat rule)
    stages: dict[str, Tensor]  # stage -> relevance at its output, (1, C, h, w)
    conservation: Conservation | None  # None unless asked for


def relevance(
    *,
    model: ResNet,
    image: Tensor,
    target: int,
    versus: int | None = None,
    conservation: bool = True,
    blocks: list[BlockRelevance] | None = None,
    progress: Callable[[float], None] = no_progress,
) -> Relevance:
    """LRP ε-z⁺-flat of logit(``target``) (minus logit(``versus``)) for a (1, 3, H, W) ``image``.

    ``model`` is a folded ResNet (the analysis's inference model is one), only read.
    ``conservation`` counts what the biases and stabilisers take on the way (a few percent
    more work); ``blocks`` collects what every residual sum received and handed on.
    """
    run = RelevancePass(model, image)
    progress(0.5)
    ledger = Ledger() if conservation else None
    points: dict[str, tuple[Any, Any, Any]] = {}

    def note(point: str, r: Tensor) -> None:
        if ledger is not None:
            points[point] = (r.sum(), ledger.biases, ledger.stabilisers)

    score, r = run.dense(target=target, versus=versus, ledger=ledger)
    note("fc", r)
    r = run.unpool(r, ledger)
    at: dict[str, Tensor] = {}
    for name in reversed(STAGES[1:]):  # stage by stage, to read the ledger at each stage's input
        r = run.down(r, start=name, stop=STAGES[STAGES.index(name) - 1], ledger=ledger, at=at, blocks=blocks)
        note(name, r)
    at["stem"] = r
    pixels = run.down(r, start="stem", ledger=ledger)
    note("input", pixels)
    progress(1.0)
    if ledger is None:
        return Relevance(pixels=pixels, stages=at, conservation=None)
    s = float(score)

    def share(v: Any) -> float:
        return float(v) / s if s != 0 else 0.0

    report = Conservation(
        score=s,
        relevance={p: share(v[0]) for p, v in points.items()},
        biases={p: share(v[1]) for p, v in points.items()},
        stabilisers={p: share(v[2]) for p, v in points.items()},
    )
    return Relevance(pixels=pixels, stages=at, conservation=report)


def relevance_conservation(*, analysis: Any, target: int | None = None, versus: int | None = None) -> Conservation:
    """Where LRP's relevance goes on ``analysis``'s photo for ``target`` (None: the top class), per point.

    ``analysis`` is an :class:`~resnet_demo.explain.Analysis`; the class and the contrast
    class are checked as for its maps. One forward and one backward of relevance.
    """
    call = analysis.method_call(method="lrp", target=target, versus=versus)  # the analysis's checks and default class
    found = relevance(model=call.model, image=call.image, target=call.target, versus=call.versus)
    assert found.conservation is not None
    return found.conservation


def finish_relevance_map(raw: Tensor, size: tuple[int, int]) -> FinishedMap:
    """A (1, 3, H, W) relevance as a heat map: the positive relevance summed over colours, scaled by its
    99th percentile (relevance is heavy-tailed). The raw map is the (3, H, W) relevance."""
    attr = torch.nan_to_num(raw.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)[0]  # (3, H, W)
    m = attr.sum(dim=0).clamp(min=0.0)  # (H, W): evidence for the score
    scale = float(torch.quantile(m.flatten(), 0.99)) if m.numel() else 0.0
    scale = scale if scale > 0 else float(m.max()) if m.numel() else 0.0
    all_zero = scale <= 0.0
    heat = torch.zeros_like(m) if all_zero else (m / scale).clamp(0.0, 1.0)
    return heat.cpu().numpy().astype(np.float32), attr.cpu().numpy().astype(np.float32), all_zero


def _lrp(call: MethodCall) -> dict[str, Tensor]:
    found = relevance(
        model=call.model,
        image=call.image,
        target=call.target,
        versus=call.versus,
        conservation=False,  # the map only: relevance_conservation() reports it
        progress=call.progress,
    )
    return {"input": found.pixels}


LRP = register(
    Method(
        name="lrp",
        label="LRP (ε-z⁺-flat)",
        space="input",
        # One forward with z⁺ beside it, one backward of relevance, the heat map: measured on ResNet-50
        # at 224 px, AMD EPYC (shared, one thread's CPU time against the engine's own forward).
        cost=lambda stage, options: 3.5,
        compute=_lrp,
        finish=finish_relevance_map,
    )
)
