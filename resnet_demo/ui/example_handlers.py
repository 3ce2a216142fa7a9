"""The example photos' handlers: an example's answer at the settings a page opens with, the same for
every visitor and cached by ``gr.Examples``, then each visitor's own analysis of it.

They draw the page with the Explain tab's handlers (:mod:`.explain_handlers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from .analysis_store import ANALYSES
from .components import user_errors
from .events import extend
from .explain_handlers import (
    ExplainPage,
    Settings,
    analyze_photo,
    class_picker,
    explain_ui,
    explained_of,
    page_of,
    page_step,
    strip_label,
    versus_picker,
)
from .session_folders import session_name

__all__ = ["ExampleAnswer", "example_answer", "example_followup"]

# Without the analysis key: a cached answer is handed to every visitor, and a key would hand them its
# analysis. Without the class pickers either: Gradio 6.31 fails to cache a dropdown's update (its
# choices), and the visitor's own event, which has the photo's analysis, fills them at no cost.
ExampleAnswer = extend(
    ExplainPage,
    "ExampleAnswer",
    {},
    drop=("analysis", "target", "versus"),
    doc="An example photo's page at the settings the page opens with, the same for every visitor: "
    "what the examples' cache keeps.",
)


@user_errors
def example_answer(image: str | None, *, first: Settings) -> ExampleAnswer:
    """An example photo's page at ``first``, the settings the page opens with: the same for every
    visitor, so the examples' cache computes it on the first click and serves it from then on.

    Its analysis is kept nowhere: each visitor's own follows (:func:`example_followup`).
    """
    analysis = analyze_photo(image, first.arch, first.weights, first.checkpoint, first.stage, first.method,
                             first.opacity, first.view)  # fmt: skip
    explained = explained_of(  # no key: the answer drops it
        analysis, key="", stage=first.stage, method=first.method, opacity=first.opacity, view=first.view
    )
    page = page_of(analysis, explained, method=first.method, opacity=first.opacity, view=first.view)
    # The strip's tiles, not the gallery's update that also sets its label: the cache keeps a copy of the
    # files of a value, not of an update's (the visitor's own event sets the label).
    return ExampleAnswer(**{f: getattr(page, f) for f in ExampleAnswer._fields})._replace(strip=explained.strip)


def example_followup(*, first: Settings) -> Callable[..., Iterator[ExplainPage]]:
    """The page's handler after an example's cached answer (:func:`example_answer` at ``first``)."""

    @user_errors
    def after_example(
        image: str | None, arch: str, weights: str, checkpoint: str | None, stage: str, method: str,
        opacity: float, view: str, request: gr.Request | None = None,
        progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
    ) -> Iterator[ExplainPage]:  # fmt: skip
        """This visitor's own analysis of the example photo: its key in their state (a key is never
        cached: the store's analyses are each visitor's), its classes in the class pickers. With settings
        other than ``first``, the cached answer is not theirs: the whole page is drawn again for them."""
        now = Settings(arch=arch, weights=weights, checkpoint=checkpoint, stage=stage, method=method,
                       opacity=opacity, view=view)  # fmt: skip
        if now != first:
            yield from explain_ui(image, arch, weights, checkpoint, stage, method, opacity, view, request, progress)
            return
        analysis = analyze_photo(image, arch, weights, checkpoint, stage, method, opacity, view)
        key = ANALYSES.put(analysis, session=session_name(request))
        own = {
            "analysis": key,
            "target": class_picker(analysis),
            "versus": versus_picker(analysis),
            # The strip shows the cached answer's tiles; its label follows the method, as a new photo's does.
            "strip": gr.update(label=strip_label(method)),
        }
        yield page_step(**own)

    return after_example
