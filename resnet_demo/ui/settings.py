"""Server-wide settings of the app: how many requests run at once, upload and cache limits, the look."""

from __future__ import annotations

import os

import gradio as gr

# Requests that run at once per queue ("inference": new photos and their views; "checks": the
# trust checks and the comparison of depths, which take seconds), each with the cores shared
# out as torch threads (see :func:`.demo.main`; RESNET_DEMO_CONCURRENCY sets it for larger
# hosts). On the 2-core EPYC one request of two threads beat two of one thread each, for 16
# clients (5.8 against 3.9 requests/s), for one (0.20 against 0.25 s round trip) and in the
# browser (0.49 against 0.78 s): the convolutions use both cores either way, and two requests
# at once only add switching between them.
INFERENCE_LIMIT = max(1, int(os.environ.get("RESNET_DEMO_CONCURRENCY", "1")))
QUEUE_SIZE = 32
# A request expected to take longer than this is refused up front (.budget): one visitor's Score-CAM
# check (70 s here) would otherwise hold the queue that every other visitor's photo waits in.
# ``python app.py --time-budget 0`` lifts it for a private run.
TIME_BUDGET_S = float(os.environ.get("RESNET_DEMO_TIME_BUDGET", "60"))
# Photos are limited by pixels (resnet_demo.core.images); this cap is for fine-tune zips and checkpoints.
MAX_UPLOAD = "300mb"
# Gradio's own sweep of its cache (every hour, files older than two hours; everything when the
# server stops). The app's files are also kept bounded every few seconds (.temp_files).
DELETE_CACHE = (3600, 7200)
# The server's one training job, fine-tune or slim (.finetune_job): a queue of its own, a few wide, so that
# a second user gets the "busy" sentence at once instead of waiting unseen, and inference never queues behind it.
TRAINING_QUEUE = {"concurrency_id": "finetune", "concurrency_limit": 4}
# The server's peak resident memory with every tab in use (new photos, the trust checks, /compare's three
# depths, transfer at full size, several visitors at once, a cancel): what a host must offer, e.g. 5 GB
# of a 16 GB Space. Measured on the 2-core EPYC: 1.0 GB at start (ResNet-50 and the libraries), +1.2 GB
# once /compare has loaded ResNet-101 and -152 (kept: named weights stay), +1.8-2.0 GB while one transfer
# explains all five stages at the model's own size. Held by the one-at-a-time heavy queue, the time
# limit, cancellation that stops the work, the bounded model caches and handing freed memory back
# after long requests; tests/test_memory_budget.py checks it.
MEMORY_BUDGET_MB = 5120
# Per-user analyses are dropped after 20 minutes idle (each holds activations).
STATE_TTL_S = 20 * 60
# How returned images are encoded: JPEG takes ~2 ms for the dozen images of a new photo, where
# WebP took 70 ms and PNG 115 ms (on the 2-core EPYC); 160 kB in all, against 95 kB and 530 kB.
IMAGE_FORMAT = "jpeg"

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky")
CSS = """
.banner-warn { border-left: 4px solid #f59e0b; padding-left: 8px; }
footer { display: none !important; }
#heatmap img { width: 100%; height: 100%; object-fit: contain; image-rendering: auto; }
/* The slider's two images in the same box: otherwise the first overflows the set height and sits lower. */
#heatmap-slider img { height: 100% !important; top: 0 !important; }
/* The weights banner is one line: its "details" disclosure sits at the end of it, and opens below. */
#weights-status .md > p:first-child, #weights-status details { display: inline; }
#weights-status summary { display: inline; cursor: pointer; margin-left: 0.4em; text-decoration: underline dotted; }
#weights-status summary::before { content: "▸ "; }
#weights-status details[open] summary::before { content: "▾ "; }
#weights-status details[open] > p:first-of-type { margin-top: 0.5em; }
"""
