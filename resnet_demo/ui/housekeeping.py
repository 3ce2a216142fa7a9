"""What the server tidies, on a timer, when a visitor leaves and when it stops: the analyses kept
per user, the fine-tune folders and checkpoints of sessions, the raw maps, and the app's files in
Gradio's cache."""

from __future__ import annotations

import atexit
import signal
import threading
from types import FrameType
from typing import Any

import gradio as gr

from . import finetune_job as jobs
from .analysis_store import ANALYSES, give_back_memory
from .downloads import DOWNLOADS
from .session_folders import forget, forget_all, offered_files, prune, session_name
from .temp_files import Limits, remove_all, sweep

TIDY_EVERY_S = 10.0
JOB_STOP_WAIT_S = 10.0  # a training job stops at its next step; one step takes seconds on a CPU


def tidy(blocks: Any, *, limits: Limits = Limits()) -> int:  # noqa: B008 - a frozen dataclass
    """One round: idle and excess analyses, idle sessions' folders, then the cache files beyond
    ``limits``; returns how many analyses and files went."""
    job = jobs.current()
    prune(keep=job.owner if job is not None else None)
    dropped = ANALYSES.sweep()
    if dropped:  # analyses gone or reduced to their photo: hand their memory back
        give_back_memory()
    return dropped + sweep(blocks, limits=limits, keep=offered_files())


def start_tidying(blocks: Any, *, every_s: float = TIDY_EVERY_S) -> threading.Event:
    """Call :func:`tidy` every ``every_s`` seconds in a daemon thread, until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            tidy(blocks)

    threading.Thread(target=loop, name="resnet-demo-tidy", daemon=True).start()
    return stop


def remove_files_on_exit(blocks: Any) -> None:
    """Leave none of the app's files behind when the server stops, on Ctrl-C and on SIGTERM alike.

    Call once, from the main thread, before ``blocks.launch()``. SIGTERM (how hosts and process
    managers stop a server) would end the process at once, before any clean-up; here it stops the
    server as Ctrl-C does, and when the process exits :func:`remove_app_files` runs.
    """
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    atexit.register(remove_app_files, blocks)


def _stop_like_ctrl_c(_signum: int, _frame: FrameType | None) -> None:
    # A second SIGTERM must not cut the clean-up short: the server is stopping already.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt  # Gradio's launch closes the server on it, and main returns


def remove_app_files(blocks: Any) -> None:
    """Remove every file the app made: a running training job stopped first, every session's work folder
    and offered checkpoint, the raw maps, and the app's files in Gradio's cache with their folders."""
    job = jobs.current()
    if job is not None:
        job.stop.set()
        if job.thread is not None:
            job.thread.join(timeout=JOB_STOP_WAIT_S)
    forget_all()
    DOWNLOADS.remove()
    remove_all(blocks)


def visitor_left(request: gr.Request, *, blocks: Any = None) -> None:
    """``demo.unload``: the page closed or reloaded. Its analyses go now, not after Gradio's hour,
    its fine-tune folder and every checkpoint offered to it (fine-tuned or slimmed) with them (unless its
    run is still stopping), and
    Gradio's own record of the session in ``blocks``."""
    session = session_name(request)
    ANALYSES.drop_session(session)
    job = jobs.current()
    if job is None or job.owner != session:
        forget(session)
    if blocks is not None:
        _drop_gradio_session(blocks, getattr(request, "session_hash", None))


def _drop_gradio_session(blocks: Any, session_hash: str | None) -> None:
    """Gradio keeps every closed page's session (a copy of each component's settings, half a MB)
    until 10,000 sessions have come, and clears only its state values after an hour."""
    holder = getattr(blocks, "state_holder", None)
    if holder is None or session_hash is None:
        return
    with holder.lock:
        holder.session_data.pop(session_hash, None)
        holder.time_last_used.pop(session_hash, None)
