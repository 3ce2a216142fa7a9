"""What the server tidies, on a timer, when a visitor leaves and when it stops: the analyses kept
per user, the fine-tune folders and checkpoints of sessions, Gradio's record of sessions, the raw
maps, and the app's files in Gradio's cache."""

from __future__ import annotations

import atexit
import datetime
import signal
import threading
from types import FrameType
from typing import Any

import gradio as gr

from . import finetune_job as jobs
from .analysis_store import ANALYSES, give_back_memory
from .downloads import DOWNLOADS
from .session_folders import forget, forget_all, name_of, offered_files, prune, session_name, working_sessions
from .temp_files import Limits, remove_all, sweep

TIDY_EVERY_S = 10.0
# A Gradio session that holds nothing here goes after this long idle: twice the default time limit, so that
# no request still running (none runs longer, but a fine-tune, whose owner is kept) loses its session.
SESSION_IDLE_S = 120.0
JOB_STOP_WAIT_S = 10.0  # a training job stops at its next step; one step takes seconds on a CPU


def tidy(blocks: Any, *, limits: Limits = Limits()) -> int:  # noqa: B008 - a frozen dataclass
    """One round: idle and excess analyses, idle sessions' folders, then the cache files beyond
    ``limits``; returns how many analyses and files went."""
    job = jobs.current()
    prune(keep=job.owner if job is not None else None)
    dropped = ANALYSES.sweep()
    holding = ANALYSES.sessions() | working_sessions() | ({job.owner} if job is not None else set())
    dropped += drop_idle_gradio_sessions(blocks, keep=holding, idle_s=SESSION_IDLE_S)
    if dropped:  # analyses gone or reduced to their photo, sessions gone: hand their memory back
        give_back_memory()
    return dropped + sweep(blocks, limits=limits, keep=offered_files())


def drop_idle_gradio_sessions(blocks: Any, *, keep: set[str], idle_s: float) -> int:
    """Forget Gradio's record of each session idle for ``idle_s`` that holds nothing on this server
    (``keep``: the :func:`session_name` of those with an analysis, a work folder or the running job);
    returns how many went.

    Gradio keeps a session for every client that sent an event until 10,000 have come (about 11 kB
    each here, see :mod:`.light_sessions`). A page's or a ``gradio_client``'s goes when it closes
    (:func:`visitor_left`), but a script on the plain HTTP API (``/call/...``, curl) makes a new one
    per call and never closes it. A page that comes back after its session went starts a new one,
    as it would once its analysis has gone.
    """
    holder = getattr(blocks, "state_holder", None)
    if holder is None:
        return 0
    now = datetime.datetime.now()
    idle = [
        session_hash
        for session_hash, used in list(holder.time_last_used.items())
        if (now - used).total_seconds() > idle_s and name_of(session_hash) not in keep
    ]
    for session_hash in idle:
        _drop_gradio_session(blocks, session_hash)
    return len(idle)


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
    """Gradio keeps every closed page's session (the settings of the components it changed, the
    state's values) until 10,000 sessions have come, and clears only its state values after an hour."""
    holder = getattr(blocks, "state_holder", None)
    if holder is None or session_hash is None:
        return
    with holder.lock:
        holder.session_data.pop(session_hash, None)
        holder.time_last_used.pop(session_hash, None)
