"""The architecture view: plotly figures and tables that explain ResNet-50/101/152.

Everything here is read from the model the app runs (built on the meta device, so
no memory is spent on weights) and from :mod:`resnet_demo.core.complexity`; nothing about
the network is typed in by hand. The functions are pure and return plotly figures
or plain rows, so the app only has to show them. The names below are the package's
interface; its modules share their other names only among themselves.

* :func:`architecture_figure` (``architecture.py``): the stem, layer1..layer4 as
  columns of bottleneck blocks, the shortcuts, the stride-2 blocks marked, and
  optionally every block coloured by a statistic of the last image (``colouring.py``,
  :data:`STAT_CHOICES`), a dilated network's real shapes, the stages a head reads and a
  note; the columns and positions come from ``layout.py`` (:func:`figure_height`), the
  hover text from ``hover.py``.
* :func:`block_figure` (``bottleneck.py``): the inside of one bottleneck block, with
  its real widths and shapes.
* :class:`BlockInfo`, :func:`block_infos`, :func:`block_choices` (``blocks.py``): the
  blocks as read from the model.
* :func:`stage_table`, :func:`comparison_table` (``tables.py``): parameters and
  multiply-accumulates.
* :func:`model_source` (``source.py``): the code of the blocks, read from the module itself.

Colours and the shared figure layout are in ``theme.py``; number and shape
formatting in ``formatting.py``.
"""

from .architecture import architecture_figure
from .blocks import BlockInfo, block_choices, block_infos
from .bottleneck import block_figure
from .colouring import STAT_CHOICES
from .layout import figure_height
from .source import model_source
from .tables import comparison_table, stage_table

__all__ = [
    "STAT_CHOICES",
    "BlockInfo",
    "architecture_figure",
    "block_choices",
    "block_figure",
    "block_infos",
    "comparison_table",
    "figure_height",
    "model_source",
    "stage_table",
]
