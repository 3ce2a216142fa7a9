"""Feature maps: the strongest channels of one stage's output, drawn as a grid.

Shared by the classifier's explanation engine and the transfer models' backbone, so that
both show a stage the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from .errors import UserError
from .render import grid

__all__ = ["FeatureGrid", "feature_grid"]


@dataclass(frozen=True)
class FeatureGrid:
    """The top channels of one stage's output by mean activation, drawn as a grid."""

    stage: str
    shape: tuple[int, int, int]  # (C, H, W) of the stage output
    channels: list[int]  # channel indices in the grid, row by row, strongest first
    image: Image.Image  # RGB grid; each tile scaled by its own maximum
    means: list[float]  # mean activation of each shown channel

    @property
    def caption(self) -> str:
        """For a gallery tile: the stage, its output's shape and the first channels shown."""
        c, h, w = self.shape
        return f"{self.stage} · {c}×{h}×{w} · channels {', '.join(map(str, self.channels[:4]))}…"


def feature_grid(
    activation: Tensor, *, stage: str, n: int = 16, tile: int = 96, first: Sequence[int] = ()
) -> FeatureGrid:
    """The ``n`` channels of ``activation`` (C, H, W) with the highest mean, strongest first, as a grid;
    ``first``: channels to show before them, in that order (a concept a user picked)."""
    act = activation.detach()
    c, h, w = act.shape
    pixels = act.permute(1, 2, 0).reshape(h * w, c)  # a view for channels_last storage: no copy
    n = max(1, min(int(n), c))
    pinned = list(dict.fromkeys(int(i) for i in first))
    if any(not 0 <= i < c for i in pinned):
        raise UserError(f"{stage} has channels 0 to {c - 1}; there is no channel {max(pinned)}.")
    with torch.inference_mode():
        strongest = torch.topk(pixels.float().mean(dim=0), min(c, n + len(pinned))).indices  # sorted
        rest = [i for i in strongest.tolist() if i not in pinned]
        order = torch.tensor((pinned + rest)[:n], device=pixels.device)
        means = pixels[:, order].float().mean(dim=0)
        maps = pixels[:, order].float().T.reshape(n, h, w)  # (n, H, W)
    return FeatureGrid(
        stage=stage,
        shape=(c, h, w),
        channels=[int(i) for i in order.tolist()],
        image=grid(maps.cpu().numpy(), tile=tile),
        means=[float(v) for v in means.tolist()],
    )
