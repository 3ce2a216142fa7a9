"""The server's one training job, a fine-tune or a slim run: a lock so that one runs at a
time, the thread it runs in, the queue its events reach the page through, and cancel by the
user who started it. Messages name the kind of job that holds the slot.

It runs in a thread of the server process, so the Explain tab keeps answering meanwhile.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..core.errors import UserError
from ..finetune import FinetuneResult, TrainEvent
from ..finetune.plots import format_duration


@dataclass(frozen=True)
class JobKind:
    """What a kind of job is called, in messages and as the kind of the checkpoint it offers."""

    key: str  # its checkpoint's kind in session_folders.offer
    noun: str  # "A {noun} is already running on this server"
    doing: str  # the progress bar's label
    preparing: str  # the status before the first event, while the run loads its model and data


FINETUNE = JobKind("finetune", "fine-tune", "fine-tuning", "Loading the pretrained weights and reading the images…")
SLIM = JobKind("slim", "slim run", "slimming", "Loading the checkpoint, pruning it and reading the images…")


@dataclass
class Job:
    """The one training job of this server."""

    owner: str  # session of the user who started it
    epochs: int
    kind: JobKind = FINETUNE
    stop: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue[TrainEvent] = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.time)
    total_steps: int = 0  # progress, for the message other users get
    step: int = 0
    result: FinetuneResult | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self, work: Callable[[], FinetuneResult]) -> None:
        """Run ``work`` in a thread; its result, or what it raised, is kept on the job."""

        def run() -> None:
            try:
                self.result = work()
            except BaseException as e:  # noqa: BLE001 - handed to the page's handler, which reports it
                self.error = e

        self.thread = threading.Thread(target=run, name=self.kind.key, daemon=True)
        self.thread.start()

    def events_until_done(self, *, poll_s: float = 0.2) -> Iterator[TrainEvent]:
        """The run's events as they come, until the thread has ended and every event is read."""
        assert self.thread is not None, "start() the job first"
        while self.thread.is_alive() or not self.events.empty():
            try:
                yield self.events.get(timeout=poll_s)
            except queue.Empty:
                continue
        self.thread.join()


_LOCK = threading.Lock()  # held for the whole run: one training job at a time
_CURRENT: Job | None = None


def current() -> Job | None:
    """The job running now, if any."""
    return _CURRENT


def busy() -> bool:
    """Whether the one training slot is taken (also while a job is starting or ending)."""
    return _LOCK.locked()


def busy_message() -> str:
    """What a user who asks for a second job (of either kind) is told: which kind runs, and how far."""
    job = _CURRENT
    if job is None:  # the slot is held for the instants before the job is set, and after it is cleared
        return "A fine-tune or slim run is starting on this server. One runs at a time; try again in a minute."
    done = f"step {job.step} of {job.total_steps}" if job.total_steps else "starting"
    return (
        f"A {job.kind.noun} is already running on this server ({done}, "
        f"for {format_duration(time.time() - job.started)}). "
        f"One runs at a time; try again when it ends. The Explain tab works meanwhile."
    )


@contextlib.contextmanager
def claim(*, owner: str, epochs: int, kind: JobKind = FINETUNE) -> Iterator[Job]:
    """Hold the server's training slot for a new job of ``kind``, or raise :class:`UserError` saying it is taken.

    On leaving, a job still running (the page went away) is stopped at its next step
    and waited for, and the slot is free again.
    """
    global _CURRENT
    if not _LOCK.acquire(blocking=False):
        raise UserError(busy_message())
    job = Job(owner=owner, epochs=epochs, kind=kind)
    _CURRENT = job
    try:
        yield job
    finally:
        if job.thread is not None and job.thread.is_alive():
            job.stop.set()
            job.thread.join()
        _CURRENT = None
        _LOCK.release()


def cancel(*, owner: str) -> bool:
    """Ask the running job to stop at its next step; False when none runs.

    Only its owner may: anyone else gets a :class:`UserError`.
    """
    job = _CURRENT
    if job is None:
        return False
    if job.owner != owner:
        raise UserError(f"The {job.kind.noun} on this server was started by someone else; only they can cancel it.")
    job.stop.set()
    return True
