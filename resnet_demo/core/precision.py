"""The number format the explanation engine's forward runs in: ``float32``, ``bfloat16`` or ``auto``.

bfloat16 keeps float32's range with an 8-bit mantissa. Where the hardware multiplies it
natively (AVX-512 BF16 or AMX on a CPU, any CUDA GPU) a ResNet forward takes about half
the time of float32's. Its rounding is harmless for the prediction and for maps drawn from
the last stage's activations, but the gradients that earlier stages' Grad-CAM weighs come
out of a long backward pass whose channel weights nearly cancel: there bfloat16 changes
the map (measured: r down to 0.87 against float32's at the stem). So bfloat16 is the
*forward*'s format only; every gradient is taken in float32, from float32's own stem output.

Measured against float32 with that rule, on the example photos and the generated sample set:
every map (each stage's Grad-CAM and their fusion) correlates r >= 0.996; but the top-5
probabilities of a 1000-class random-weights model moved by up to 0.019 (0.005 for a
fine-tuned 3-class one), over the 0.01 that a result shown as the same may move, and the
full explain was 0.81-0.93x of a float32 forward over several runs: at best the edge of the
0.8x that would make it worth it.
So ``auto`` keeps float32 (:data:`AUTO_BFLOAT16`), and bfloat16 is an opt-in whose
probabilities and maps are close to, not equal to, float32's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

__all__ = ["AUTO_BFLOAT16", "PRECISIONS", "Precision", "cpu_flags", "native_bfloat16", "resolve_precision"]

PRECISIONS = ("float32", "bfloat16", "auto")
# Whether ``auto`` may choose bfloat16 where it is native: not until it passes the accuracy
# guard at a worthwhile speed (see the module docstring).
AUTO_BFLOAT16 = False
# CPU feature flags (as /proc/cpuinfo spells them) that multiply bfloat16 in hardware.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked, the format that runs, and why."""

    asked: str  # "float32", "bfloat16" or "auto"
    dtype: torch.dtype  # torch.float32 or torch.bfloat16: the forward's format
    reason: str  # one sentence, for the page and the command line

    @property
    def name(self) -> str:
        """The format that runs, as the settings spell it: "float32" or "bfloat16"."""
        return "bfloat16" if self.dtype == torch.bfloat16 else "float32"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, as on macOS or Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def native_bfloat16(*, device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: any CUDA GPU, or a CPU with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and not BF16_FLAGS.isdisjoint(cpu_flags())


def resolve_precision(*, name: str, device: torch.device) -> Precision:
    """The :class:`Precision` that ``name`` (float32, bfloat16 or auto) gives on ``device``.

    An unknown name is a :class:`UserError`. bfloat16 asked for explicitly runs even where it
    is emulated (slower, about the same numbers), so that results can be compared on any machine.
    """
    asked = str(name).strip().lower()
    if asked not in PRECISIONS:
        raise UserError(f"Unknown precision {name!r}: choose {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}.")
    native = native_bfloat16(device=device)
    if asked == "float32":
        return Precision(asked, torch.float32, "float32 was asked for.")
    if asked == "bfloat16":
        how = "native" if native else "emulated on this device, slower than float32"
        return Precision(asked, torch.bfloat16, f"bfloat16 was asked for ({how}): approximate probabilities and maps.")
    if not native:
        return Precision(asked, torch.float32, "auto: this device has no native bfloat16, so float32 is faster.")
    if not AUTO_BFLOAT16:
        return Precision(asked, torch.float32, "auto: bfloat16 is native here but moves the results too much.")
    where = "this GPU" if device.type == "cuda" else "this CPU (AVX-512 BF16 or AMX)"
    return Precision(asked, torch.bfloat16, f"auto: {where} multiplies bfloat16 natively.")
