"""The app as a public server: what each visitor costs in memory, how soon it is given back,
the bound on uploaded checkpoints, the app's files on disk under load, and a fine-tune's disk.

The app runs in-process (the ``app`` fixture) and is driven with gradio_client; memory is
the process's resident set (/proc/self/status), read after collecting garbage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from resnet_demo.bench.serve import call_over_http
from resnet_demo.core.weights import KEEP_FILE_MODELS, NAMED_WEIGHTS, shared_models
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui import housekeeping
from resnet_demo.ui.analysis_store import ANALYSES, DISPLAY_MAX, give_back_memory
from resnet_demo.ui.housekeeping import tidy, visitor_left
from resnet_demo.ui.temp_files import Limits, disk_usage, tracked_files

from .conftest import EXAMPLES, random_state_dict

pytestmark = pytest.mark.slow

VISITORS = 6
MB = 1024**2


def _rss_mb() -> float:
    give_back_memory()  # what the server itself does after visitors leave
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _explain(client: Client, photo: Path) -> tuple[Any, ...]:
    return client.predict(
        handle_file(str(photo)), "resnet50", "imagenet-v2", None, "layer4", "gradcam", 0.5, "crop", api_name="/explain"
    )


def _phone_photo(path: Path) -> Path:
    """A 24 MP (6000x4000) JPEG with smooth colour and some texture, like a phone photo."""
    x = np.linspace(0, 255, 6000, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, 4000, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (4000, 6000)), np.broadcast_to(y, (4000, 6000)), (x + y) / 2], axis=-1)
    rgb += np.random.default_rng(0).normal(0, 8, (4000, 1, 1)).astype(np.float32)  # row texture
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=85)
    return path


def _wait_for(condition: Callable[[], bool], *, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _session(client: Client) -> str:
    return "".join(c for c in client.session_hash if c.isalnum())[:64]


def _kept(clients: list[Client]) -> int:
    """How many of these clients' sessions have analyses on the server."""
    return len(ANALYSES.sessions() & {_session(c) for c in clients})


@pytest.mark.parametrize(("kind", "limit_mb"), [("ordinary", 8.0), ("24 MP", 15.0)])
def test_memory_kept_per_visitor(
    app_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, limit_mb: float
) -> None:
    photo = EXAMPLES / "cat.jpg" if kind == "ordinary" else _phone_photo(tmp_path / "phone.jpg")
    warm = _client(app_url)
    _explain(warm, photo)  # the model's first pass, the allocator's pools, Gradio's lazy state
    # Its analyses go as they would when it leaves (which the server notices only at its next heartbeat,
    # up to 15 s on); its page stays open, the same before and after the baseline.
    ANALYSES.drop_session(_session(warm))
    assert _kept([warm]) == 0
    # The clients live in this process too: made, connected and past a first call before the baseline.
    visitors = [_client(app_url) for _ in range(VISITORS)]
    for client in visitors:
        client.predict(handle_file(str(EXAMPLES / "coffee.jpg")), "resnet50", "random", api_name="/predict")
    before = _rss_mb()
    for client in visitors:
        _explain(client, photo)
    active = (_rss_mb() - before) / VISITORS
    monkeypatch.setattr(ANALYSES, "hot_s", 0.2)  # the visitors go idle: their maps go, their pass stays
    time.sleep(0.3)
    ANALYSES.sweep()
    kept = (_rss_mb() - before) / VISITORS
    try:
        assert _kept(visitors) == VISITORS
        assert all(max(p.image.size) <= DISPLAY_MAX for p in ANALYSES.prepared())  # a display copy, not the photo
        assert kept <= limit_mb, f"{kept:.1f} MB kept per idle visitor for an {kind} photo"
        # While in use a visitor's maps and gradients are kept (~15 MB); RSS growth over a dozen
        # requests is noisy (allocator pools), so this bound only proves the 24 MP photo itself
        # (~70 MB as RGB) is never kept: the goal is the idle figure above.
        assert active <= 40.0, f"{active:.1f} MB per active visitor for an {kind} photo"
        print(f"{kind}: {active:.1f} MB per active visitor, {kept:.1f} MB per idle one")
    finally:
        for client in [warm, *visitors]:
            client.close()


def test_visitors_state_goes_when_they_leave_or_idle(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app_url, photo = app.local_url, EXAMPLES / "coffee.jpg"
    # The server learns that a page closed at its next heartbeat: every 15 s by Gradio's default, here every
    # half second (read as each client connects), so that those who leave are gone in a second, not in 15.
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")
    first = _client(app_url)
    _explain(first, photo)
    first.close()
    assert _wait_for(lambda: _kept([first]) == 0)
    leaving = [_client(app_url) for _ in range(VISITORS)]
    staying = [_client(app_url) for _ in range(VISITORS)]
    for client in leaving + staying:
        client.predict(handle_file(str(EXAMPLES / "cat.jpg")), "resnet50", "random", api_name="/predict")
    baseline = _rss_mb()
    for client in leaving + staying:
        _explain(client, photo)
    assert _kept(leaving + staying) == 2 * VISITORS
    grown = _rss_mb() - baseline

    for client in leaving:  # disconnects: Gradio alone would keep their state for an hour
        client.close()
    assert _wait_for(lambda: _kept(leaving) == 0), "the analyses of visitors who left are still kept"
    assert _kept(staying) == VISITORS
    sessions = app.state_holder.session_data  # Gradio's own record of each page: gone with it too
    assert _wait_for(lambda: not any(c.session_hash in sessions for c in leaving))
    assert all(c.session_hash in sessions for c in staying)

    monkeypatch.setattr(ANALYSES, "ttl_s", 0.5)  # the others go idle past the time to live
    time.sleep(0.6)
    ANALYSES.sweep()
    assert _kept(staying) == 0
    back = _rss_mb() - baseline
    print(f"{2 * VISITORS} visitors: memory +{grown:.0f} MB, then +{back:.0f} MB once they left or went idle")
    assert back <= max(10.0, 0.25 * grown), f"memory grew by {grown:.0f} MB and fell back only to +{back:.0f} MB"
    with pytest.raises(Exception, match="no longer on the server"):  # a view of an expired photo says so
        h.rerender("expired-key", "layer4", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "crop")
    for client in staying:
        client.close()


def test_scripts_on_the_plain_http_api_leave_no_sessions_behind(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, calls = app.state_holder.session_data, 12
    page = _client(app.local_url)  # a visitor with an analysis on the server: kept while it is
    _explain(page, EXAMPLES / "cat.jpg")
    before = set(sessions)
    with httpx.Client(timeout=120) as http:
        answers = [  # /predict as a script with no Gradio client calls it
            call_over_http(http, app.local_url, "predict", EXAMPLES / "cat.jpg", "resnet50", "random")
            for _ in range(calls)
        ]
    assert all(answer[0]["confidences"] for answer in answers)
    made = set(sessions) - before
    assert len(made) == calls  # Gradio's record of each call, kept until 10,000 have come
    # Made light (light_sessions): the settings of the components the call changed, not of all 242 blocks.
    assert all(len(sessions[s].config_values) <= 8 for s in made), [len(sessions[s].config_values) for s in made]
    monkeypatch.setattr(housekeeping, "SESSION_IDLE_S", 0.5)
    time.sleep(0.6)
    tidy(app)
    assert not made & set(sessions), "the scripts' idle sessions are still kept"
    assert page.session_hash in sessions  # its analysis is still here: so is its session
    page.close()


def test_uploaded_checkpoints_are_a_bounded_cache(app: Any, tmp_path: Path) -> None:
    uploads = 5
    files = []
    for i in range(uploads):
        sd = random_state_dict("resnet50", seed=10 + i)
        sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][:3].clone(), sd["fc.bias"][:3].clone()  # 3 classes
        torch.save(sd, tmp_path / f"mine-{i}.pth")
        files.append(tmp_path / f"mine-{i}.pth")
    before = _rss_mb()
    for path in files:
        h.run_explain(str(EXAMPLES / "cat.jpg"), "resnet50", "upload", str(path), "layer4", "gradcam", 0.5, "crop",
                      progress=None)  # fmt: skip
    from_files = [m for m in shared_models() if m.spec.name not in NAMED_WEIGHTS]
    assert len(from_files) == KEEP_FILE_MODELS
    assert {Path(m.spec.name).name for m in from_files} == {"mine-3.pth", "mine-4.pth"}  # the most recent
    ANALYSES.sweep()  # analyses of models that left the cache go with them
    assert all(m in from_files for m in ANALYSES.models() if m.spec.name not in NAMED_WEIGHTS)
    grown = _rss_mb() - before
    print(f"{uploads} checkpoints: memory +{grown:.0f} MB")
    # Each ResNet-50 is ~100 MB, and as much again for its folded inference copy.
    assert grown <= KEEP_FILE_MODELS * 220 + 60, f"memory grew by {grown:.0f} MB after {uploads} checkpoints"


def test_temp_files_stay_bounded_under_load(app: Any, tmp_path: Path) -> None:
    requests = 15  # a dozen files each: over half as many again as the bound below
    photos = []
    rng = np.random.default_rng(1)
    for i in range(requests):  # distinct photos: every answer is new content for Gradio's cache
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"p{i}.jpg")
        photos.append(tmp_path / f"p{i}.jpg")
    client = _client(app.local_url)
    for photo in photos:
        _explain(client, photo)
    client.close()
    made, _ = disk_usage(app)
    limits = Limits(max_files=120, max_bytes=8 * 1024**2, min_age_s=2.0)
    time.sleep(limits.min_age_s + 0.5)  # no file is removed younger than that: a page may be fetching it
    tidy(app, limits=limits)
    files, size = disk_usage(app)
    print(f"{requests} requests: {made} files, then {files} files ({size / MB:.1f} MB) after a sweep")
    assert made > limits.max_files, "the load made too few files to test the bound"
    assert files <= limits.max_files and size <= limits.max_bytes
    assert all(Path(p).exists() for p in tracked_files(app))  # what Gradio tracks is what is on disk


def test_finetune_run_keeps_only_the_offered_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_data: Path, pretrained: Path
) -> None:
    import gradio as gr

    from resnet_demo.ui import finetune_handlers, session_folders

    monkeypatch.setattr(session_folders, "WORK_ROOT", tmp_path / "work")
    request = gr.Request(session_hash="visitor1")
    outputs = list(
        finetune_handlers.run_finetune(
            str(tiny_data), "resnet50", 1, 0.01, 6, "head", 32, request=request, progress=None
        )
    )
    offered = Path(outputs[-1][2])
    assert offered.is_file() and offered.parent.name.startswith("finetuned-")
    assert str(offered) in session_folders.offered_files()
    assert gr.File().move_resource_to_block_cache(str(offered)) == str(offered)  # Gradio serves it without a copy
    session = tmp_path / "work" / "visitor1"
    assert not list(session.glob("run-*")), "the run's other files (last.pth, logs) are still on disk"
    visitor_left(request)  # the page closed
    assert not offered.exists() and not offered.parent.exists() and not session.exists()
