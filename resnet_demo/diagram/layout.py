"""Where the architecture diagram puts things: columns, wrapping, node positions, sizes, height.

x runs in column units from the stem at 0; y runs in block rows, 0 at the top and
negative downwards, so a block's y is minus its row in its column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.model import ARCH_DEPTHS
from .blocks import check_arch, stage_depths

MAX_ROWS = 12  # a stage longer than this wraps into more columns (ResNet-152's layer3: 3 x 12)
ROW_PX = 34  # pixels per block row at the default height
TOP_PAD = 2.3  # rows above the first block: three-line stage headers
BOTTOM_PAD = 0.9  # rows below the last block: the connectors between columns
MARGIN_T, MARGIN_B = 8, 48  # pixels; the bottom margin holds the legend
COL_W = 1.0  # one column of blocks, its labels and its gutter, in x units
STAGE_GAP = 0.25  # extra x between stages
EDGE_W = 1.5  # the stem and head columns: their labels are longer than block indices


def rows(arch: str) -> int:
    """Block rows of the tallest column of ``arch``."""
    return min(max(max(ARCH_DEPTHS[arch]), 3), MAX_ROWS)


def figure_height(*, arch: str, bottom_rows: float = 0.0, top_px: int = 0) -> int:
    """Default pixel height of :func:`~resnet_demo.diagram.architecture_figure` for ``arch``;
    ``bottom_rows`` (block rows) and ``top_px`` (pixels) make room for extra labels."""
    check_arch(arch)
    span = rows(arch) - 1 + TOP_PAD + BOTTOM_PAD + bottom_rows
    return int(round(span * ROW_PX)) + MARGIN_T + top_px + MARGIN_B


@dataclass(frozen=True)
class Column:
    """One column of nodes: its x and the names of its nodes, top to bottom."""

    x: float
    names: tuple[str, ...]


def layout_columns(arch: str) -> tuple[list[tuple[str, list[Column]]], float, float]:
    """Columns per stage ("stem" and "head" included) and the x of the first and last."""
    n_rows = rows(arch)
    x = 0.0
    out: list[tuple[str, list[Column]]] = [("stem", [Column(x, ("image", "conv1", "maxpool"))])]
    x += EDGE_W + STAGE_GAP
    for stage, depth in stage_depths(arch).items():
        n_cols = math.ceil(depth / n_rows)
        per_col = math.ceil(depth / n_cols)  # balanced: 23 -> 12 + 11, not 12 + 11 by luck
        cols = []
        for c in range(n_cols):
            idx = range(c * per_col, min(depth, (c + 1) * per_col))
            cols.append(Column(x, tuple(f"{stage}.{i}" for i in idx)))
            x += COL_W
        out.append((stage, cols))
        x += STAGE_GAP
    out.append(("head", [Column(x, ("avgpool", "fc"))]))
    return out, 0.0, x


@dataclass(frozen=True)
class Grid:
    """The diagram of one architecture at one height: columns, node positions and sizes."""

    columns: list[tuple[str, list[Column]]]  # per stage, "stem" and "head" included
    x_first: float
    x_last: float
    rows: int
    pos: dict[str, tuple[float, float]]  # node name ("conv1", "layer3.0", ...) -> (x, y)
    marker_size: float  # of a block node, in pixels
    text_size: int
    bottom_rows: float = 0.0  # extra rows below the blocks (labels under the stages)
    top_px: int = 0  # extra top margin, in pixels (a note over the diagram)

    @property
    def y_bottom(self) -> float:
        """The lowest y of the blocks and their connectors, above any extra rows."""
        return -(self.rows - 1) - BOTTOM_PAD

    @property
    def all_columns(self) -> list[Column]:
        return [col for _, cols in self.columns for col in cols]


def grid(*, arch: str, height: int, bottom_rows: float = 0.0, top_px: int = 0) -> Grid:
    """Lay out ``arch`` for a figure ``height`` pixels tall (``bottom_rows`` and ``top_px``: see
    :func:`figure_height`)."""
    columns, x_first, x_last = layout_columns(arch)
    n_rows = rows(arch)
    # Marker size follows the row pitch, so a smaller height shrinks nodes instead of overlapping them.
    span = n_rows - 1 + TOP_PAD + BOTTOM_PAD + bottom_rows
    row_px = (height - MARGIN_T - top_px - MARGIN_B) / span
    pos = {name: (col.x, -float(r)) for _, cols in columns for col in cols for r, name in enumerate(col.names)}
    return Grid(
        columns=columns,
        x_first=x_first,
        x_last=x_last,
        rows=n_rows,
        pos=pos,
        marker_size=max(6.0, min(20.0, 0.58 * row_px)),
        text_size=max(8, min(12, int(row_px * 0.36))),
        bottom_rows=bottom_rows,
        top_px=top_px,
    )


def arc(x: float, y: float, n: int = 9) -> tuple[list[float], list[float]]:
    """A shortcut beside a block at (x, y): from above it to below it, bulging left."""
    p0, p1, p2 = (x - 0.05, y + 0.42), (x - 0.5, y), (x - 0.05, y - 0.42)
    xs, ys = [], []
    for k in range(n):
        t = k / (n - 1)
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
        xs.append(round(a * p0[0] + b * p1[0] + c * p2[0], 3))
        ys.append(round(a * p0[1] + b * p1[1] + c * p2[1], 3))
    return xs, ys


def main_path(columns: list[Column]) -> tuple[list[float | None], list[float | None]]:
    """The main path as one polyline (None between pieces): down each column, then through
    the gutter to the top of the next."""
    path_x: list[float | None] = []
    path_y: list[float | None] = []
    for a, b in zip(columns, columns[1:], strict=False):
        bottom = -(len(a.names) - 1)
        gutter = b.x - 0.52 * COL_W if b.x - a.x <= COL_W + 1e-9 else b.x - 0.55 * COL_W - STAGE_GAP / 2
        path_x += [a.x, a.x, gutter, gutter, b.x, b.x, None]
        path_y += [0.0, bottom - 0.6, bottom - 0.6, 0.62, 0.62, 0.0, None]
    last_col = columns[-1]
    path_x += [last_col.x, last_col.x]
    path_y += [0.0, -(len(last_col.names) - 1)]
    return path_x, path_y
