"""One work folder per browser session, for the Fine-tune and Slim tabs' data and runs, and
the checkpoints handed to each session for download.

Everything the tabs write lives under :data:`WORK_ROOT`, in the system temp folder. A
finished run keeps only the checkpoint the user may download, one per kind of run (a
fine-tuned and a slimmed one can be offered side by side), moved into Gradio's cache (so
that Gradio serves it without a copy of its own) and spared by the cache sweeper
(:mod:`.temp_files`). All of them go with the session: when its page closes
(``demo.unload``) or after :data:`STALE_AFTER_S` idle, since a Space's disk is small.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from .settings import STATE_TTL_S

WORK_ROOT = Path(tempfile.gettempdir()) / "resnet_demo_finetune"
STALE_AFTER_S = STATE_TTL_S

_OFFERED: dict[str, dict[str, Path]] = {}  # session -> kind -> the checkpoint in Gradio's cache it may download
_OFFERED_LOCK = threading.Lock()
# The sessions this process made a folder for: WORK_ROOT may hold another server's too.
_MADE: set[str] = set()


def session_name(request: gr.Request | None) -> str:
    """The browser session's id, reduced to characters that are safe in a folder name."""
    return name_of(getattr(request, "session_hash", None))


def name_of(session_hash: str | None) -> str:
    """:func:`session_name` of a Gradio session's id."""
    return "".join(c for c in str(session_hash or "local") if c.isalnum())[:64] or "local"


def session_dir(session: str) -> Path:
    """The session's folder, created if needed and marked as in use."""
    path = WORK_ROOT / session
    with _OFFERED_LOCK:
        _MADE.add(session)
    path.mkdir(parents=True, exist_ok=True)
    path.touch()  # the mark prune() reads
    return path


def prune(*, keep: str | None) -> None:
    """Forget other sessions idle for :data:`STALE_AFTER_S`, except ``keep`` (the running fine-tune's)."""
    if not WORK_ROOT.exists():
        return
    now = time.time()
    for d in WORK_ROOT.iterdir():
        if d.is_dir() and d.name != keep and now - d.stat().st_mtime > STALE_AFTER_S:
            forget(d.name)


def fresh_folder(parent: Path, *, prefix: str) -> Path:
    """A new sub-folder; this session's earlier ones of that kind are removed first."""
    for old in parent.glob(f"{prefix}-*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))


def offer(session: str, path: Path, *, kind: str) -> Path:
    """Move the checkpoint at ``path`` into a folder of its own in Gradio's cache, for ``session``
    to download; returns where it is now. The session's earlier checkpoint of the same ``kind``
    (e.g. ``"finetune"``, ``"slim"``) goes; those of other kinds stay."""
    folder = Path(get_upload_folder()) / f"finetuned-{secrets.token_hex(16)}"  # unguessable, like Gradio's
    folder.mkdir(parents=True)
    moved = Path(shutil.move(str(path), str(folder / path.name)))
    with _OFFERED_LOCK:
        earlier = _OFFERED.setdefault(session, {}).get(kind)
        _OFFERED[session][kind] = moved
    _remove_files({earlier} if earlier is not None else set())
    return moved


def offered_files() -> set[str]:
    """Every checkpoint offered to a session still here: the cache sweeper spares them."""
    with _OFFERED_LOCK:
        return {str(p) for kinds in _OFFERED.values() for p in kinds.values()}


def working_sessions() -> set[str]:
    """The sessions with a work folder or an offered checkpoint here."""
    with _OFFERED_LOCK:
        made, offered = set(_MADE), set(_OFFERED)
    return {s for s in made if (WORK_ROOT / s).exists()} | offered


def forget(session: str) -> None:
    """Remove ``session``'s work folder and the checkpoints of every kind offered to it."""
    shutil.rmtree(WORK_ROOT / session, ignore_errors=True)
    with _OFFERED_LOCK:
        paths = set(_OFFERED.pop(session, {}).values())
    _remove_files(paths)


def forget_all() -> None:
    """Forget every session this process made a folder for or offered a checkpoint to: the server is stopping."""
    with _OFFERED_LOCK:
        sessions = _MADE | set(_OFFERED)
        _MADE.clear()
    for session in sessions:
        forget(session)
    with contextlib.suppress(OSError):  # only when empty: another server's sessions may be in it
        WORK_ROOT.rmdir()


def _remove_files(paths: set[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
        if p.parent.name.startswith("finetuned-"):  # the folder offer() made for it
            shutil.rmtree(p.parent, ignore_errors=True)
