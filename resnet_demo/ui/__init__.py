"""The Gradio app. This package is the only part of resnet_demo that imports gradio.

* :mod:`.demo`: ``build_demo`` (the banner, the tabs, the events across tabs) and the command line;
* :mod:`.settings`: queue and upload limits, theme and CSS;
* :mod:`.zerogpu`: the model handlers under ``spaces.GPU`` on Hugging Face ZeroGPU hardware, unchanged elsewhere;
* one ``*_tab`` module per tab (layout and events) with its ``*_handlers`` (plain functions):
  Explain, Architecture, Compare depths, Transfer, Fine-tune, Slim, Audit;
* the Explain tab's :mod:`.example_handlers` (the example photos: the cached answer, then each
  visitor's own analysis) and :mod:`.map_captions` (what a map's caption says);
* the Explain tab's explanation extras: :mod:`.method_menu` (the methods grouped by the question
  they answer), :mod:`.method_gallery` (every quick method side by side), :mod:`.concepts_panel`
  with :mod:`.concepts_handlers` (CRP's and DFF's concepts), and :mod:`.trust_panel` with
  :mod:`.trust_handlers` (faithfulness curves, the method ranking, the randomisation sanity
  check), :mod:`.metric_cards_handlers` (the metric cards) and :mod:`.evaluate_api` (``/evaluate``);
* :mod:`.model_choice`: the model and weights pickers and the weights banner;
* :mod:`.finetune_job` and :mod:`.session_folders`: the server's one training job (fine-tune or slim), and each
  browser session's work folder and downloadable checkpoint;
* :mod:`.analysis_store`: each visitor's analyses, kept on the server (``gr.State`` holds a key),
  bounded, dropped when idle or when the visitor leaves; :mod:`.temp_files`: the app's files in
  Gradio's cache, bounded; :mod:`.housekeeping`: the timer and the ``unload`` event that tidy both,
  and Gradio's record of idle sessions; :mod:`.light_sessions`: that record made without a copy of
  every block's settings;
* :mod:`.downloads`: the bounded folder of raw maps; :mod:`.components`: small shared pieces;
  :mod:`.markdown_text`: user text (class names) shown literally in Markdown;
* :mod:`.agent_tools`: the tools for AI agents that ``python app.py --mcp`` serves over MCP
  (``classify_image``, ``explain_image``), the only public endpoints that are MCP tools;
* :mod:`.events`: ``outputs_of``, the outputs of an event built from the fields of the named tuple its
  handler returns; :mod:`.messages`: the sentences only the app needs (the core says the rest).
"""

from __future__ import annotations

from .demo import build_demo, launch_kwargs, main, parse_args, ready_to_launch
from .settings import CSS, INFERENCE_LIMIT, MAX_UPLOAD, QUEUE_SIZE, THEME

__all__ = [
    "CSS",
    "INFERENCE_LIMIT",
    "MAX_UPLOAD",
    "QUEUE_SIZE",
    "THEME",
    "build_demo",
    "launch_kwargs",
    "main",
    "parse_args",
    "ready_to_launch",
]
