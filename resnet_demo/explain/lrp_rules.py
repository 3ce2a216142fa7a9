"""The LRP rules of :mod:`.lrp`, one piece each: the stabiliser, the z⁺ convolution, the flat first
layer, the max pool's routing, a block's rules as elementwise factors, and the ledger of what biases and
stabilisers take. See :mod:`.lrp` for how they make one pass."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EPSILON",
    "BlockFactors",
    "IndexedMaxPool",
    "Ledger",
    "Positive",
    "ZPlusConv",
    "flat",
    "positive_parameters",
    "stabilised",
    "transposed",
]

EPSILON = 1e-6  # zennit's default ε and stabiliser


def stabilised(z: Tensor) -> Tensor:
    """z moved away from 0 by ε, in its own direction (0 counts as positive), as zennit's ``stabilize``."""
    return z + torch.where(z >= 0, EPSILON, -EPSILON)


class Ledger:
    """Relevance taken on the way down by the biases and by the stabilisers (0-d tensors: no sync per layer)."""

    def __init__(self) -> None:
        self.biases: Tensor | float = 0.0
        self.stabilisers: Tensor | float = 0.0

    def take(self, *, biases: Tensor | float = 0.0, stabilisers: Tensor | float = 0.0) -> None:
        self.biases = self.biases + biases
        self.stabilisers = self.stabilisers + stabilisers


def transposed(r: Tensor, weight: Tensor, conv: nn.Conv2d, size: Sequence[int]) -> Tensor:
    """(B, C_out, h, w) through ``conv``'s geometry backwards, with ``weight``: (B, C_in, *size), the
    gradient of the convolution with respect to its input (a transposed convolution).

    ``torch.nn.grad.conv2d_input`` computes the same, but its placeholder input sends oneDNN
    to a slow fallback.
    """
    h, w = r.shape[-2:]
    extra = tuple(
        n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)  # the rows and columns the stride left over
        for n, m, s, p, d, k in zip(
            size, (h, w), conv.stride, conv.padding, conv.dilation, conv.kernel_size, strict=True
        )
    )
    return F.conv_transpose2d(r, weight, None, conv.stride, conv.padding, extra, conv.groups, conv.dilation)


@dataclass(frozen=True)
class Positive:
    """A convolution's parameters as the z⁺ rule uses them."""

    weight: Tensor  # W⁺
    bias: Tensor | None  # b⁺
    shifted_bias: Tensor  # b⁺ + ε: the stabiliser folded into the bias, so z⁺ + ε costs no pass of its own
    version: tuple[int, ...]  # the parameters' versions it was made from


# W⁺ and b⁺ of the shared models' convolutions, made on first use: clamping every weight per call
# costs a tenth of the forward. Keyed weakly, like the inference copies themselves (see .network).
_POSITIVE: weakref.WeakKeyDictionary[nn.Conv2d, Positive] = weakref.WeakKeyDictionary()
_POSITIVE_LOCK = threading.Lock()


def positive_parameters(conv: nn.Conv2d) -> Positive:
    version = tuple(p._version for p in conv.parameters())
    with _POSITIVE_LOCK:
        found = _POSITIVE.get(conv)
    if found is None or found.version != version:
        weight = conv.weight.detach().clamp(min=0)
        bias = None if conv.bias is None else conv.bias.detach().clamp(min=0)
        shifted = (bias if bias is not None else weight.new_zeros(conv.out_channels)) + EPSILON
        found = Positive(weight, bias, shifted, version)
        with _POSITIVE_LOCK:
            _POSITIVE[conv] = found
    return found


class ZPlusConv(nn.Module):
    """One of the shell's convolutions: computes what the network's does, and keeps its input and
    z⁺ = W⁺ x + b⁺ for the z⁺ rule. Made per call; the weights are the shared model's own."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.positive = positive_parameters(conv)
        self.input: Tensor | None = None
        self.denominator: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        c, p = self.conv, self.positive
        self.input = x  # (1, C_in, H, W), >= 0: a ReLU's or the max pool's output
        # z⁺ >= 0 (x, W⁺ and b⁺ all are), so its stabiliser is +ε, added with the bias.
        self.denominator = F.conv2d(x, p.weight, p.shifted_bias, c.stride, c.padding, c.dilation, c.groups)
        return c(x)

    def back(self, scaled: Tensor, ledger: Ledger | None) -> Tensor:
        """W⁺ᵀ s: (B, C_out, h, w) s = R_out / (z⁺ + ε) -> (B, C_in, H, W); the input's relevance is x times it."""
        if ledger is not None:
            per_channel = scaled.sum(dim=(0, 2, 3))
            bias = 0.0 if self.positive.bias is None else per_channel @ self.positive.bias
            ledger.take(biases=bias, stabilisers=EPSILON * per_channel.sum())
        assert self.input is not None, "run the forward first"
        return transposed(scaled, self.positive.weight, self.conv, self.input.shape[-2:])


class IndexedMaxPool(nn.Module):
    """The stem's max pool, keeping which input won each window."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool
        self.indices: Tensor | None = None
        self.input_size: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool
        out, self.indices = F.max_pool2d(
            x, p.kernel_size, p.stride, p.padding, p.dilation, ceil_mode=p.ceil_mode, return_indices=True
        )
        self.input_size = tuple(x.shape)
        return out

    def relevance(self, r: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, H, W): each output's relevance to its window's winner (overlapping
        windows may pick one input twice: it gets both)."""
        assert self.indices is not None, "run the forward first"
        b, c = r.shape[:2]
        h, w = self.input_size[-2:]
        out = r.new_zeros(b, c, h * w)
        out.scatter_add_(2, self.indices.reshape(1, c, -1).expand(b, -1, -1), r.reshape(b, c, -1))
        return out.view(b, c, h, w)


def flat(conv: nn.Conv2d, r: Tensor, size: tuple[int, int], ledger: Ledger | None) -> Tensor:
    """The flat rule at the first convolution: (B, C_out, h, w) -> (B, C_in, H, W).

    With every weight and input 1 and no bias, z counts the taps of a window that fall
    on the image (times the input channels), alike for every output channel, so the
    rule is one single-channel transposed convolution of the channel sum of R / z.
    """
    kernel = r.new_ones(1, 1, *conv.kernel_size)
    ones = r.new_ones(1, 1, *size)
    z = F.conv2d(ones, kernel, None, conv.stride, conv.padding, conv.dilation) * conv.in_channels  # (1, 1, h, w)
    scaled = r / (z + EPSILON)  # z > 0
    if ledger is not None:
        ledger.take(stabilisers=EPSILON * scaled.sum())
    per_pixel = transposed(scaled.sum(dim=1, keepdim=True), kernel, conv, size)  # (B, 1, H, W)
    return per_pixel.expand(-1, conv.in_channels, -1, -1)  # every colour of a pixel alike


@dataclass(frozen=True, eq=False)
class BlockFactors:
    """One block's rules below its output as elementwise factors, (1, C, h, w) each, made once per pass:
    a batched backward (:mod:`.crp`) uses them for every row."""

    to_branch: Tensor  # F(x)'s share of the sum: F(x) / (F(x) + shortcut ± ε)
    to_shortcut: Tensor  # the shortcut's share
    conv3: Tensor  # R_out -> s at conv3: F(x)'s share / (z⁺ + ε)
    conv2: Tensor  # W⁺ᵀ s at conv3 -> s at conv2: conv3's input / conv2's z⁺ + ε
    conv1: Tensor  # likewise, conv2's input / conv1's z⁺ + ε
    shortcut: Tensor  # R_out -> s at the projection (the shortcut's share / its z⁺ + ε), or R at x itself
